"""Write-behind for results: a worker stores results in batches, off the task's critical path.

A pool thread (or prefork child) that just ran a task hands its result record to the
:class:`ResultWriter` and moves on; one writer thread per process takes everything waiting and
stores it with one ``Backend.store_many`` call (one Redis pipeline, one SQLite transaction). Under
load that turns N round trips into one.

When nothing is queued and nothing is being written, the submitting thread stores its record
itself: waking the writer thread costs a futex wake-up plus a wait for the GIL that the
submitting thread still holds, about 0.2 ms on a busy 2-core box, as long as the write itself, and
it sits between a finished task and its waiting ``get()``. A record submitted while a write is
under way queues for the writer thread's next batch instead, so batching is kept exactly when
there is something to batch; and one thread's records are still stored in the order it submitted
them (an inline write happens only when everything submitted before it is stored).

Who waits: an ``acks_late`` task's message is acked only once its result is stored, so its
caller waits on the returned future; an early-acked task's caller does not (its message is gone
already, and the result is written within one round trip). :meth:`ResultWriter.flush` runs at
worker shutdown and at interpreter exit, so a warm shutdown loses no result.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections import deque
from concurrent.futures import Future

from celeriac.results.base import Backend, ResultMeta

logger = logging.getLogger("celeriac.results")

MAX_BATCH = 500


def _in_event_loop() -> bool:
    """Whether this thread runs an event loop, which must never block on a write (``afinish``
    submits from the asyncio pool's loop): its records always go to the writer thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class ResultWriter:
    """Batches ``store`` calls of many threads into ``store_many`` calls of one thread."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._pending: deque[tuple[ResultMeta, Future[None]]] = deque()
        self._cond = threading.Condition()
        #: Writes under way: the writer thread's batch, or a submitting thread's own record.
        self._busy = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        atexit.register(self.flush)

    def submit(self, meta: ResultMeta) -> Future[None]:
        """Store ``meta`` now if the writer is idle, else queue it for the writer thread's next
        batch; the future completes (or fails) once it is stored."""
        future: Future[None] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("result writer is closed")
            if not self._pending and not self._busy and not _in_event_loop():
                self._busy += 1
                inline = True
            else:
                inline = False
                self._pending.append((meta, future))
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="celeriac-result-writer", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
        if inline:
            self._store([(meta, future)])
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                if self._busy:  # an inline write is under way: this batch must follow it
                    self._cond.wait()
                    continue
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                self._busy += 1
            self._store(batch)

    def _store(self, batch: list[tuple[ResultMeta, Future[None]]]) -> None:
        """Store ``batch`` (the caller counted itself in ``_busy``) and settle its futures."""
        try:
            self.backend.store_many([meta for meta, _ in batch])
        except Exception as exc:
            self.backend.outage.failed(exc, f"storing {len(batch)} results")
            for _, future in batch:
                future.set_exception(exc)
        else:
            self.backend.outage.ok()
            for _, future in batch:
                future.set_result(None)
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything queued so far is stored (or failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the writer thread."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        atexit.unregister(self.flush)
