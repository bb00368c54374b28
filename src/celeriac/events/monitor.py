"""``celeriac events``: a live terminal monitor of the cluster, built with Textual.

Three tables, redrawn every ``refresh`` seconds from a :class:`~celeriac.events.state.State`
that the event stream feeds as events arrive: the workers (alive or lost by Celery's heartbeat
rule, running tasks, tasks processed, load average, seconds since last heard), the task types
(rates over the last 10 s and totals per event type), and the latest failures (when, which
task, which worker, the exception). ``q`` quits.

The monitor reads any async iterable of event dicts, so tests feed it a real worker's events
through :class:`~celeriac.events.receiver.EventReceiver` and drive it with Textual's
``App.run_test()``. textual is imported by this module only (the ``dashboard`` bundle).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Header, Static

from celeriac.events.event import Event
from celeriac.events.state import State

#: The event types whose totals and rates the task table shows, in its column order.
TASK_COLUMNS = ("received", "started", "succeeded", "failed", "retried")
#: The event types whose per-second rate it shows.
RATE_COLUMNS = ("received", "succeeded", "failed")
FAILURES_SHOWN = 20


class EventsMonitor(App[None]):
    """The monitor; ``events`` is the stream it folds into ``state`` (a new State if None)."""

    TITLE = "celeriac events"
    CSS = """
    DataTable { height: auto; max-height: 40%; margin-bottom: 1; }
    #summary { height: 1; color: $text-muted; }
    .title { text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "quit", "Quit")]

    def __init__(
        self,
        events: AsyncIterable[Event],
        state: State | None = None,
        *,
        refresh: float = 1.0,
        subtitle: str = "",
    ) -> None:
        super().__init__()
        self.events = events
        self.state = state if state is not None else State()
        self.refresh_interval = refresh
        self.sub_title = subtitle
        #: Times the tables were redrawn (tests wait on it).
        self.redraws = 0
        #: Why the event stream ended, if it did (shown in the summary line).
        self.stream_error: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary")
        yield Static("Workers", classes="title")
        yield DataTable(id="workers", cursor_type="none", zebra_stripes=True)
        yield Static("Task types (per second over 10 s; totals)", classes="title")
        yield DataTable(id="tasks", cursor_type="none", zebra_stripes=True)
        yield Static("Recent failures", classes="title")
        yield DataTable(id="failures", cursor_type="none", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#workers", DataTable).add_columns(
            "worker", "status", "active", "processed", "load", "heard (s ago)"
        )
        self.query_one("#tasks", DataTable).add_columns(
            "task", *(f"{c}/s" for c in RATE_COLUMNS), *TASK_COLUMNS
        )
        self.query_one("#failures", DataTable).add_columns(
            "time", "task", "id", "worker", "exception"
        )
        self.run_worker(self._consume(), name="events", exclusive=True)
        self.set_interval(self.refresh_interval, self.redraw)
        self.redraw()

    async def _consume(self) -> None:
        fold = self.state.event
        try:
            async for event in self.events:
                fold(event)
        except Exception as exc:  # shown, not raised: the monitor stays up with what it has
            self.stream_error = f"{type(exc).__name__}: {exc}"
        else:
            self.stream_error = "the event stream ended"

    # -- drawing ----------------------------------------------------------------------------
    def redraw(self) -> None:
        """Rebuild the tables from the state (cheap: a screenful of rows). Does nothing once
        the screen is gone: as the app closes, its screen is removed before its refresh timer
        stops, and a tick in between would otherwise raise from the timer."""
        try:
            summary = self.query_one("#summary", Static)
            workers, tasks, failures = (
                self.query_one(f"#{name}", DataTable) for name in ("workers", "tasks", "failures")
            )
        except NoMatches:
            return
        now = time.time()
        self._draw_workers(workers, now)
        self._draw_tasks(tasks, now)
        self._draw_failures(failures)
        state = self.state
        line = (
            f"{len(state.alive_workers(now))} alive, {len(state.lost_workers(now))} lost; "
            f"{state.task_count} tasks received; {state.event_count} events"
        )
        if self.stream_error:
            line += f"  [{self.stream_error}]"
        summary.update(line)
        self.redraws += 1

    def _draw_workers(self, table: DataTable[str], now: float) -> None:
        table.clear()
        for worker in sorted(self.state.workers.values(), key=lambda w: w.hostname):
            alive = worker.alive_at(now)
            heard = f"{now - worker.last_seen:.0f}" if worker.last_seen is not None else "-"
            table.add_row(
                worker.hostname,
                "ONLINE" if alive else ("OFFLINE" if worker.offline else "LOST"),
                _text(worker.active),
                _text(worker.processed),
                " ".join(f"{load:.2f}" for load in worker.loadavg or ()),
                heard,
                key=worker.hostname,
            )

    def _draw_tasks(self, table: DataTable[str], now: float) -> None:
        table.clear()
        rates = self.state.rates
        for name in sorted(self.state.counts):
            counts = self.state.counts[name]
            table.add_row(
                name,
                *(f"{rates.rate(f'{name} {c}', now):.1f}" for c in RATE_COLUMNS),
                *(str(counts.get(f"task-{c}", 0)) for c in TASK_COLUMNS),
                key=name,
            )

    def _draw_failures(self, table: DataTable[str]) -> None:
        table.clear()
        recent = list(self.state.recent_failures)[-FAILURES_SHOWN:]
        for task in reversed(recent):
            when = time.strftime("%H:%M:%S", time.localtime(task.failed or 0))
            table.add_row(
                when,
                task.name or "?",
                task.uuid,
                task.worker.hostname if task.worker is not None else "?",
                (task.exception or "")[:80],
            )

    # -- for tests and scripts --------------------------------------------------------------
    def rows(self, table: str) -> list[list[Any]]:
        """The cells of one table (``workers``, ``tasks``, ``failures``) as drawn now."""
        widget = self.query_one(f"#{table}", DataTable)
        return [list(widget.get_row_at(i)) for i in range(widget.row_count)]


def _text(value: object) -> str:
    return "-" if value is None else str(value)
