"""The demo's tasks: an app on the embedded SQLite default (``./celeriac.db``), no server."""

from __future__ import annotations

import asyncio

from celeriac import Celeriac, Task

app = Celeriac("demo")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
async def slow_square(x: int) -> int:
    """An ``async def`` task: it runs on the worker thread's own event loop."""
    await asyncio.sleep(0.01)
    return x * x


@app.task(bind=True, max_retries=3, default_retry_delay=0.2)
def flaky(self: Task[[int], int], attempts_needed: int) -> str:
    """Fails until it has been retried ``attempts_needed`` times; the retries wait on the broker."""
    if self.request.retries < attempts_needed:
        raise self.retry(countdown=0.2)
    return f"succeeded after {self.request.retries} retries"


@app.task
def divide(x: float, y: float) -> float:
    return x / y


@app.task
def total(values: list[int]) -> int:
    """A chord body: gets the list of its header's results, in order."""
    return sum(values)
