"""The caller's side of ``rpc://``: the latest record per task id, and waiters woken by task id.

The reply consumer (on the backend's loop thread) hands every record it receives to
:meth:`Replies.put`; ``get()`` and ``aget()`` wait here. Waiters are kept per task id, so that a
reply wakes only the waiters of its own task: with one shared condition, N waiters and N
replies would cost N² wake-ups. A sync waiter sleeps on a :class:`threading.Event`; an async
one on a future of its own loop, resolved through ``call_soon_threadsafe`` (the consumer runs
on another thread).

Which record wins: a ready record (SUCCESS, FAILURE, REVOKED...) replaces anything, and a
record that is not ready never replaces a ready one. Replies of one task can come from several
connections (a RETRY stored by the worker that ran an attempt, the SUCCESS by the worker that
ran the next), and RabbitMQ orders messages per connection only.

Memory: a process that sends tasks and never reads their results would keep every reply, so
the table is bounded: records older than ``max_age`` seconds and, past ``max_size`` entries,
the oldest ones are dropped (a record still awaited is never dropped). A dropped result reads
PENDING, as an expired one does on the other backends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from celeriac.results.base import ResultMeta

__all__ = ["Replies"]


@dataclass(slots=True)
class _Waiters:
    """Who waits for one task id."""

    events: list[threading.Event] = field(default_factory=list)
    futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list
    )

    def __bool__(self) -> bool:
        return bool(self.events or self.futures)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Replies:
    """Thread-safe table of the latest reply per task id, with per-task waiters."""

    def __init__(self, *, max_size: int = 100_000, max_age: float | None = 86400.0) -> None:
        self.max_size = max_size
        self.max_age = max_age
        self._lock = threading.Lock()
        #: task id -> (record, monotonic time it arrived); oldest first.
        self._records: OrderedDict[str, tuple[ResultMeta, float]] = OrderedDict()
        self._waiters: dict[str, _Waiters] = {}

    def __len__(self) -> int:
        return len(self._records)

    # -- the consumer's side ------------------------------------------------------------------
    def put(self, meta: ResultMeta) -> None:
        """Keep ``meta`` as its task's latest record (see the module docstring for which wins)
        and wake that task's waiters when it is ready."""
        task_id = meta.task_id
        with self._lock:
            current = self._records.get(task_id)
            if current is not None and current[0].ready and not meta.ready:
                return
            self._records[task_id] = (meta, time.monotonic())
            self._records.move_to_end(task_id)
            self._trim()
            waiters = self._waiters.pop(task_id, None) if meta.ready else None
        if waiters is not None:
            for event in waiters.events:
                event.set()
            for loop, future in waiters.futures:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_wake, future)

    def _trim(self) -> None:
        """Drop the oldest records past ``max_size`` or ``max_age`` (lock held)."""
        records = self._records
        cutoff = None if self.max_age is None else time.monotonic() - self.max_age
        for _ in range(len(records)):  # each record is looked at once at most
            task_id, (_, arrived) = next(iter(records.items()))
            if len(records) <= self.max_size and (cutoff is None or arrived > cutoff):
                return
            if task_id in self._waiters:  # awaited: keep it, behind the newer ones
                records.move_to_end(task_id)
                continue
            del records[task_id]

    # -- the readers' side --------------------------------------------------------------------
    def get(self, task_id: str) -> ResultMeta:
        """The latest record of ``task_id``, or a PENDING one."""
        found = self.find(task_id)
        return ResultMeta(task_id=task_id) if found is None else found

    def find(self, task_id: str) -> ResultMeta | None:
        """The latest record of ``task_id``, or ``None`` when none came."""
        with self._lock:
            found = self._records.get(task_id)
        return None if found is None else found[0]

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._records.pop(task_id, None)

    def wait(self, task_id: str, timeout: float | None) -> ResultMeta:
        """Block until ``task_id`` has a ready record or ``timeout`` passes; the latest record."""
        with self._lock:
            found = self._records.get(task_id)
            if found is not None and found[0].ready:
                return found[0]
            event = threading.Event()
            self._waiters.setdefault(task_id, _Waiters()).events.append(event)
        try:
            event.wait(timeout)
        finally:
            self._drop_waiter(task_id, event)
        return self.get(task_id)

    async def await_(self, task_id: str, timeout: float | None) -> ResultMeta:
        """The async twin of :meth:`wait`; cancelling it leaves nothing behind."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._records.get(task_id)
            if found is not None and found[0].ready:
                return found[0]
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(task_id, _Waiters()).futures.append((loop, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            self._drop_waiter(task_id, future)
        return self.get(task_id)

    def _drop_waiter(self, task_id: str, waiter: threading.Event | asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(task_id)
            if waiters is None:
                return
            if isinstance(waiter, threading.Event):
                waiters.events = [e for e in waiters.events if e is not waiter]
            else:
                waiters.futures = [(lp, f) for lp, f in waiters.futures if f is not waiter]
            if not waiters:
                del self._waiters[task_id]

    def waiting(self) -> int:
        """How many task ids are awaited now (for tests and introspection)."""
        with self._lock:
            return len(self._waiters)

    def clear(self) -> None:
        """Forget every record (a fork's child starts empty); waiters stay registered."""
        with self._lock:
            self._records.clear()
