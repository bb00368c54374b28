"""The beat: any number of them run; the one holding the store's lease fires the due slots.

Each beat loops on :meth:`Beat.tick`. A beat that does not lead asks for the lease every third
of its length (``lease``, 10 s by default), so a killed leader is replaced within one lease. The
leader, when it takes over, writes the code's entries (``beat_schedule``) into the store; then,
on each tick, it reloads the entries when the store's version changed (a ``celeriac beat add``
or ``pause`` elsewhere: seen within ``poll`` seconds, 1 by default), fires every entry whose slot
has come, in one batch publish, and records the slots it handled. It sleeps until the next slot,
the next renewal or the next poll, whichever comes first: an idle beat wakes about once a second.

Exactly one firing per slot: the slots and each firing's name and task id are the same in every
beat (:mod:`celeriac.beat.slots`), the slot is recorded in the store after its publish, and the
publish carries the slot as a deduplication key, which Redis, SQLite and the memory broker
check in the same atomic step as the publish. So a leader killed between publishing and
recording, or two beats that both believe they lead (a leader frozen past its lease), cannot
double a run there. On RabbitMQ, which has no such check, the single-active-consumer lease keeps
a second leader from existing while the first one's connection lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.beat import slots
from celeriac.beat.entry import Entry, from_declaration
from celeriac.beat.registry import open_store
from celeriac.beat.store import BeatStore
from celeriac.schedules.zones import to_zone
from celeriac.transports.registry import transport_class

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.routing import Queue
    from celeriac.transports.base import Outgoing

logger = logging.getLogger("celeriac.beat")

#: How long the broker remembers a slot it published: longer than a failover takes (a lease),
#: short enough that 10,000 entries a minute keep few keys alive.
DEDUP_TTL = 300.0


def code_entries(app: Celeriac) -> dict[str, Entry]:
    """The entries the app's code declares (``beat_schedule``, ``add_periodic_task``)."""
    declared = app.conf.beat_schedule or {}
    return {name: from_declaration(name, spec) for name, spec in declared.items()}


class Beat:
    """One beat of ``app`` (see the module docstring). ``clock`` gives UNIX time (tests pass
    their own)."""

    def __init__(
        self,
        app: Celeriac,
        *,
        store: BeatStore | None = None,
        node: str | None = None,
        lease: float = 10.0,
        poll: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.store = store if store is not None else open_store(app)
        self.node = node or f"beat-{os.getpid()}@{socket.gethostname()}"
        self.lease = lease
        self.poll = poll
        self.clock = clock
        self.tz = to_zone(app.conf.timezone or "UTC", "timezone")
        #: Whether the broker drops a second send of a slot (Redis, SQLite, memory); where it
        #: cannot (RabbitMQ), the lease is checked again right before each publish, so a leader
        #: that was frozen past its lease learns it before it sends, not after.
        self._broker_dedups = transport_class(app.broker_url).deduplicates
        self.leading = False
        self.entries: dict[str, Entry] = {}
        self.runs: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._version: int | None = None
        self._renew_at = 0.0
        self._poll_at = 0.0
        self._last_fired: dict[str, datetime] = {}
        self._stopping = asyncio.Event()
        #: Firings published so far by this beat (tests and the bench read it).
        self.fired = 0

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick until :meth:`stop`; give the lease up on the way out."""
        await self.store.open()
        signals.beat_init.send(self)
        try:
            while not self._stopping.is_set():
                try:
                    wait = await self.tick()
                except Exception as exc:  # a broker outage: say it, keep trying
                    logger.warning("beat: %s; trying again", exc)
                    self.leading = False
                    wait = min(self.lease / 3, 2.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=max(wait, 0.001))
        finally:
            if self.leading:
                try:
                    await self.store.resign(self.node)
                except Exception as exc:
                    logger.debug("beat: resigning: %s", exc)
            await self.store.close()

    def stop(self) -> None:
        self._stopping.set()

    async def tick(self) -> float:
        """One turn: keep or seek the lease, reload changed entries, fire what is due. Returns
        the seconds until the next turn is needed."""
        now = self.clock()
        if now >= self._renew_at:
            await self._renew(now)
        if not self.leading:
            return self._renew_at - now
        if now >= self._poll_at:
            version = await self.store.version()
            if version != self._version:
                await self._reload(version)
            self._poll_at = now + self.poll
        await self._fire_due(self.clock())
        now = self.clock()
        wake = min(self._renew_at, self._poll_at)
        if self._heap:
            wake = min(wake, self._heap[0][0])
        return max(0.0, wake - now)

    async def _renew(self, now: float) -> None:
        was = self.leading
        self.leading = await self.store.lead(self.node, self.lease)
        self._renew_at = now + self.lease / 3
        if self.leading and not was:
            logger.info("beat: %s leads now", self.node)
            await self._take_over()
        elif was and not self.leading:
            logger.warning("beat: %s lost the lead", self.node)
            self._heap.clear()
            self._due.clear()

    async def _take_over(self) -> None:
        """Write the code's entries to the store (code wins unless changed at run time) and
        load everything the store holds."""
        stored = {n: Entry.from_dict(d) for n, d in (await self.store.entries()).items()}
        changes, removed = sync(code_entries(self.app), stored)
        if changes:
            await self.store.put_entries({n: e.to_dict() for n, e in changes.items()})
        if removed:
            await self.store.delete_entries(removed)
        self._version = None
        self._poll_at = 0.0

    async def _reload(self, version: int) -> None:
        self.entries = {n: Entry.from_dict(d) for n, d in (await self.store.entries()).items()}
        self.runs = await self.store.runs()
        self._version = version
        self._heap.clear()
        self._due.clear()
        now_ts = self.clock()
        starts = {n: now_ts for n in self.entries if n not in self.runs}
        if starts:  # a new entry's walk starts now, for this beat and any later leader
            await self.store.record_runs(starts)
            self.runs.update(starts)
        for name, entry in self.entries.items():
            # the first slot after the record: due now (a catch-up) or later
            self._push(name, slots.next_slot(entry, _at(self.runs[name]), self.tz).timestamp())
        logger.debug("beat: %d entries (version %s)", len(self.entries), version)

    def _push(self, name: str, at: float) -> None:
        self._due[name] = at
        heapq.heappush(self._heap, (at, name))

    # -- firing -------------------------------------------------------------------------------
    async def _fire_due(self, now_ts: float) -> None:
        now = datetime.fromtimestamp(now_ts, UTC)
        firings: list[tuple[Entry, datetime]] = []
        handled: dict[str, float] = {}
        while self._heap and self._heap[0][0] <= now_ts:
            at, name = heapq.heappop(self._heap)
            entry = self.entries.get(name)
            if entry is None or self._due.get(name) != at:
                continue  # removed, or superseded by a newer push
            plan = slots.plan(entry, self.runs.get(name), now, self.tz)
            fire = list(plan.fire)
            if fire and entry.overlap == "skip" and await self._still_running(entry):
                plan.missed.extend(fire)
                fire = []
            firings.extend((entry, slot) for slot in fire)
            if plan.missed:
                self._report_missed(entry, plan)
            if plan.last is not None:
                handled[name] = plan.last.timestamp()
            if plan.next_due is not None:
                self._push(name, plan.next_due.timestamp())
        if firings and not self._broker_dedups:
            self.leading = await self.store.lead(self.node, self.lease)
            if not self.leading:
                logger.warning("beat: %s lost the lead before sending; the leader sends", self.node)
                self._heap.clear()
                self._due.clear()
                return
        if firings:
            await self._publish(firings)
        if handled:
            await self.store.record_runs(handled)
            self.runs.update(handled)

    async def _still_running(self, entry: Entry) -> bool:
        """``overlap="skip"``: whether this beat's last firing of the entry is unfinished."""
        last = self._last_fired.get(entry.name)
        backend = self.app.backend
        if last is None or backend is None:
            return False
        task_id = slots.slot_task_id(entry.name, last)
        meta = await asyncio.to_thread(backend.get_meta, task_id)
        return meta.status not in states.READY_STATES

    def _report_missed(self, entry: Entry, plan: slots.Plan) -> None:
        latest = plan.missed[-1].astimezone(self.tz).isoformat()
        more = " and earlier ones" if plan.skipped_ahead else ""
        logger.warning(
            "beat: %s missed %d slot(s)%s (latest %s; catch_up=%s, misfire_grace=%s)",
            entry.name,
            len(plan.missed),
            more,
            latest,
            entry.catch_up,
            entry.misfire_grace,
        )
        signals.beat_missed.send(self, entry=entry.name, slots=list(plan.missed))

    async def _publish(self, firings: list[tuple[Entry, datetime]]) -> None:
        """Every due firing in one batch publish, each carrying its slot for deduplication."""
        sends: list[tuple[Outgoing, Queue | None, tuple[Any, ...], dict[str, Any]]] = []
        for entry, slot in firings:
            options: dict[str, Any] = dict(entry.options)
            options["task_id"] = slots.slot_task_id(entry.name, slot)
            if entry.expires is not None:
                options["expires"] = slot + timedelta(seconds=entry.expires)
            if entry.jitter:
                options["countdown"] = random.uniform(0, entry.jitter)
            headers = dict(options.get("headers") or {})
            headers["beat_entry"] = entry.name
            headers["beat_slot"] = slot.isoformat()
            options["headers"] = headers
            item, queue = self.app.prepare(entry.task, entry.args, entry.kwargs, **options)
            item = dataclasses.replace(
                item, dedup_key=f"beat:{slots.slot_key(entry.name, slot)}", dedup_ttl=DEDUP_TTL
            )
            sends.append((item, queue, entry.args, entry.kwargs))
        await self.app.apublish(sends)
        for entry, slot in firings:
            self._last_fired[entry.name] = slot
        self.fired += len(firings)
        logger.info(
            "beat: sent %s",
            ", ".join(f"{e.name}@{s.astimezone(self.tz):%H:%M:%S}" for e, s in firings[:20])
            + (f" and {len(firings) - 20} more" if len(firings) > 20 else ""),
        )


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def sync(
    code: Mapping[str, Entry], stored: Mapping[str, Entry]
) -> tuple[dict[str, Entry], list[str]]:
    """What the leader writes when it takes over: the code's entries win over stored ones that
    came from code; an entry changed at run time keeps its change (the difference is logged);
    an entry the code no longer declares is removed unless it was added at run time."""
    changes: dict[str, Entry] = {}
    for name, entry in code.items():
        old = stored.get(name)
        if old is None:
            changes[name] = entry
        elif old.key != entry.key:
            if old.origin == "runtime":
                logger.warning(
                    "beat: entry %r was changed at run time; keeping that, not the code's: "
                    "stored %s, code %s",
                    name,
                    old.key,
                    entry.key,
                )
            else:
                changes[name] = entry
    removed = [n for n, e in stored.items() if e.origin == "code" and n not in code]
    return changes, removed
