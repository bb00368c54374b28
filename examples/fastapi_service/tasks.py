"""The tasks the service sends and the worker runs: one module both import.

The broker and result backend come from the environment (``CELERIAC_BROKER_URL``,
``CELERIAC_RESULT_BACKEND``), so the web service and its workers are pointed at the same
servers by their deployment, not by code; without them, both use ``./celeriac.db`` (SQLite).
"""

from __future__ import annotations

import asyncio

from celeriac import Celeriac

app = Celeriac("fastapi_service")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def divide(x: float, y: float) -> float:
    """Fails on ``y == 0``: the service reports the task's error, it does not crash."""
    return x / y


@app.task
async def word_count(text: str) -> dict[str, int]:
    """An ``async def`` task (say, one that fetches a page first): the worker awaits it."""
    await asyncio.sleep(0)
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts
