"""Helpers for testing code that uses celeriac: an in-memory app and a worker in a thread.

>>> app = memory_app("shop")
>>> with worker_thread(app):
...     assert add.delay(2, 3).get(timeout=5) == 5
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celeriac.app import Celeriac
from celeriac.errors import CeleriacError
from celeriac.worker.worker import Worker


def memory_app(main: str = "test", **settings: Any) -> Celeriac:
    """An app on a fresh in-memory broker and result backend of its own."""
    url = f"memory://{uuid.uuid4().hex}"
    return Celeriac(main, broker=url, backend=url, **settings)


@contextmanager
def worker_thread(app: Celeriac, timeout: float = 10.0, **options: Any) -> Iterator[Worker]:
    """Run a real worker for ``app`` in a background thread; stop it (warm) on exit.

    ``options`` are :class:`~celeriac.worker.worker.Worker`'s keyword arguments
    (``concurrency``, ``pool``, ``queues``, ``prefetch_multiplier``...).
    """
    options.setdefault("concurrency", 2)
    options.setdefault("pool", "threads")  # an in-memory app lives in this one process
    worker = Worker(app, **options)
    status: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            status.append(asyncio.run(worker.run_async()))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="celeriac-test-worker", daemon=True)
    thread.start()
    try:
        while not worker.ready.wait(0.05):
            if not thread.is_alive():
                raise CeleriacError(f"worker did not start: {errors or status}")
            timeout -= 0.05
            if timeout <= 0:
                raise CeleriacError("worker did not become ready in time")
        yield worker
    finally:
        worker.stop()
        thread.join(30)
    if errors:
        raise errors[0]
