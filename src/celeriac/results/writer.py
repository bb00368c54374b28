"""Write-behind for results: a worker stores results in batches, off the task's critical path.

A pool thread (or prefork child) that just ran a task hands its result record to the
:class:`ResultWriter` and moves on; one writer thread per process takes everything waiting and
stores it with one ``Backend.store_many`` call (one Redis pipeline, one SQLite transaction). Under
load that turns N round trips into one; when idle a record is written at once, so a waiting
``get()`` sees it one round trip later, as before.

Who waits: an ``acks_late`` task's message is acked only once its result is stored, so its
caller waits on the returned future; an early-acked task's caller does not (its message is gone
already, and the result is written within one round trip). :meth:`ResultWriter.flush` runs at
worker shutdown and at interpreter exit, so a warm shutdown loses no result.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from concurrent.futures import Future

from celeriac.results.base import Backend, ResultMeta

logger = logging.getLogger("celeriac.results")

MAX_BATCH = 500


class ResultWriter:
    """Batches ``store`` calls of many threads into ``store_many`` calls of one thread."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._pending: deque[tuple[ResultMeta, Future[None]]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        atexit.register(self.flush)

    def submit(self, meta: ResultMeta) -> Future[None]:
        """Queue ``meta`` for storing; the future completes (or fails) once it is stored."""
        future: Future[None] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("result writer is closed")
            self._pending.append((meta, future))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="celeriac-result-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                self._busy = True
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
                    self._busy = False
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
