"""``app.beat``: the entries of a running fleet's beats, changed at run time from any process.

>>> app.beat.add("report", "shop.report", crontab(minute=0, hour=7), kwargs={"to": "ops"})
>>> app.beat.pause("report"); app.beat.resume("report")
>>> app.beat.run_now("report")        # once, now, outside its schedule
>>> [e.name for e in app.beat.list()]
>>> app.beat.remove("report")

Every change writes the store that the beats read (the broker's own), so the leader applies it
within a second, without a restart. An entry changed here is marked as changed at run time: when
a beat takes over with code that declares the same entry differently, the run-time change is
kept (and the difference logged); an entry added here is never removed by a deployment.

Each method is synchronous (a script, a Django view, the CLI) and runs on a private event loop
of this process; the async twins (``alist``, ``aadd``...) run on the caller's loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.beat.entry import Entry, as_schedule
from celeriac.beat.registry import open_store
from celeriac.beat.store import BeatStore
from celeriac.errors import ImproperlyConfigured
from celeriac.utils.portal import Portal

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.results.result import AsyncResult

T = TypeVar("T")


class BeatAPI:
    """The beat entries of one app (see the module docstring)."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self._portal = Portal("celeriac-beat-api")

    # -- plumbing -------------------------------------------------------------------------------
    async def _with_store(self, use: Callable[[BeatStore], Awaitable[T]]) -> T:
        store = open_store(self.app)
        await store.open()
        try:
            return await use(store)
        finally:
            await store.close()

    def _sync(self, use: Callable[[BeatStore], Awaitable[T]]) -> T:
        return self._portal.call(self._with_store(use))

    async def _entry(self, store: BeatStore, name: str) -> Entry:
        data = (await store.entries()).get(name)
        if data is None:
            raise ImproperlyConfigured(f"beat: no entry named {name!r}")
        return Entry.from_dict(data)

    async def _change(self, store: BeatStore, name: str, **changes: Any) -> Entry:
        entry = (await self._entry(store, name)).with_changes(origin="runtime", **changes)
        await store.put_entries({name: entry.to_dict()})
        return entry

    # -- async ----------------------------------------------------------------------------------
    async def alist(self) -> list[Entry]:
        """Every entry, by name, with what it is: ``entry.paused``, ``entry.schedule``..."""

        async def use(store: BeatStore) -> list[Entry]:
            found = await store.entries()
            return [Entry.from_dict(found[name]) for name in sorted(found)]

        return await self._with_store(use)

    async def aruns(self) -> dict[str, datetime]:
        """The last slot handled per entry."""

        async def use(store: BeatStore) -> dict[str, datetime]:
            return {n: datetime.fromtimestamp(t, UTC) for n, t in (await store.runs()).items()}

        return await self._with_store(use)

    async def aadd(
        self,
        name: str,
        task: str,
        schedule: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        **policy: Any,
    ) -> Entry:
        """Add (or replace) an entry: ``schedule`` as in ``beat_schedule``; ``policy`` takes
        ``catch_up``, ``misfire_grace``, ``overlap``, ``jitter``, ``expires``, ``paused``."""
        entry = Entry(
            name=name,
            task=task,
            schedule=as_schedule(schedule, f"beat entry {name!r}"),
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            options=dict(options or {}),
            origin="runtime",
            **policy,
        )

        async def use(store: BeatStore) -> Entry:
            await store.put_entries({name: entry.to_dict()})
            return entry

        return await self._with_store(use)

    async def aremove(self, name: str) -> None:
        async def use(store: BeatStore) -> None:
            await self._entry(store, name)  # a clear error for a name that is not there
            await store.delete_entries([name])

        await self._with_store(use)

    async def apause(self, name: str) -> Entry:
        return await self._with_store(lambda store: self._change(store, name, paused=True))

    async def aresume(self, name: str) -> Entry:
        return await self._with_store(lambda store: self._change(store, name, paused=False))

    async def arun_now(self, name: str) -> AsyncResult[Any]:
        """Send the entry's task once now, outside its schedule (its slots are unchanged)."""
        entry = await self._with_store(lambda store: self._entry(store, name))
        options = dict(entry.options)
        headers = {**(options.pop("headers", None) or {}), "beat_entry": entry.name}
        return await self.app.asend_task(
            entry.task, entry.args, entry.kwargs, headers=headers, **options
        )

    # -- sync -----------------------------------------------------------------------------------
    def list(self) -> list[Entry]:
        return self._portal.call(self.alist())

    def runs(self) -> dict[str, datetime]:
        return self._portal.call(self.aruns())

    def add(
        self,
        name: str,
        task: str,
        schedule: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        **policy: Any,
    ) -> Entry:
        return self._portal.call(self.aadd(name, task, schedule, args, kwargs, options, **policy))

    def remove(self, name: str) -> None:
        self._portal.call(self.aremove(name))

    def pause(self, name: str) -> Entry:
        return self._portal.call(self.apause(name))

    def resume(self, name: str) -> Entry:
        return self._portal.call(self.aresume(name))

    def run_now(self, name: str) -> AsyncResult[Any]:
        return self._portal.call(self.arun_now(name))

    def next_run(self, entry: Entry, after: datetime | None = None) -> datetime:
        """When ``entry`` fires next after ``after`` (now by default), in the app's zone."""
        now = after or datetime.now(UTC)
        tz = self.app.conf.timezone or "UTC"
        return entry.schedule.next_after(now, tz)

    def close(self) -> None:
        self._portal.close()
