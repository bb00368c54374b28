"""``celeriac -A app events``: watch the cluster's events, live.

Without options, a terminal monitor (:mod:`celeriac.events.monitor`: workers, task rates,
recent failures). With ``--json`` (or Celery's ``--dump``), one event per line as JSON, for
scripts: ``celeriac -A proj events --json | jq 'select(.type == "task-failed")'``.
``--limit`` and ``--timeout`` end it after so many events or after so long without one (exit 0
either way); Ctrl-C ends it too. Workers send ``task-*`` events only with ``-E`` (or after
``celeriac control enable_events``); ``worker-*`` events always.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import click
import orjson

from celeriac.app import Celeriac
from celeriac.cli.main import AppContext
from celeriac.errors import CeleriacError
from celeriac.events.event import Event
from celeriac.events.receiver import EventReceiver


def _app(ctx: AppContext) -> Celeriac:
    """The app of ``-A``; with only ``-b`` (as ``celery -b URL events``), a bare app on it."""
    if ctx.spec or not ctx.broker:
        return ctx.app
    return Celeriac("events", broker=ctx.broker)


def _receiver(app: Celeriac) -> EventReceiver:
    """A receiver that, once listening, asks every worker for a heartbeat (as Celery's
    ``celery events`` does), so the workers show at once."""

    async def wakeup() -> None:
        await asyncio.to_thread(app.control.heartbeat)

    transport = app.create_transport()
    return EventReceiver(transport, exchange=app.conf.event_exchange, wakeup=wakeup)


@click.command("events")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one line of JSON.")
@click.option("-d", "--dump", "dump", is_flag=True, help="The same as --json (Celery's name).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Stop after this many events."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop when no event came for this many seconds.",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between redraws of the monitor.",
)
@click.pass_obj
def command(
    ctx: AppContext,
    as_json: bool,
    dump: bool,
    limit: int | None,
    timeout: float | None,
    refresh: float,
) -> int:
    """Watch the cluster's events: a live monitor, or one JSON event per line."""
    app = _app(ctx)
    receiver = _receiver(app)
    try:
        if as_json or dump:
            return _print_events(receiver, limit, timeout)
        return _monitor(receiver, refresh, app)
    except NotImplementedError as exc:
        raise click.ClickException(f"this broker cannot carry events: {exc}") from None
    except (CeleriacError, OSError) as exc:
        raise click.ClickException(f"cannot receive events: {exc}") from None
    except KeyboardInterrupt:
        return 0


def _print_events(receiver: EventReceiver, limit: int | None, timeout: float | None) -> int:
    stdout = sys.stdout
    try:
        for event in receiver.iter(timeout=timeout, limit=limit):
            stdout.write(orjson.dumps(event).decode() + "\n")
            stdout.flush()
    except BrokenPipeError:  # | head: the reader left, which is no error
        return 0
    return 0


def _monitor(receiver: EventReceiver, refresh: float, app: Celeriac) -> int:
    try:
        from celeriac.events.monitor import EventsMonitor
    except ImportError:
        raise click.ClickException(
            "the monitor needs textual: pip install 'celeriac[dashboard]' (or use --json)"
        ) from None

    async def stream() -> AsyncIterator[Event]:
        async with receiver:
            async for event in receiver:
                yield event

    from celeriac.utils.urls import redact_url

    EventsMonitor(stream(), refresh=refresh, subtitle=redact_url(app.broker_url)).run()
    return 0
