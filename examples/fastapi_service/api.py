"""The web service: sends tasks with ``await task.adelay(...)`` and awaits their results with
``await result.aget(...)``, neither of which blocks the event loop, so one slow result never
holds up the other requests.

The lifespan opens the producer when the service starts (a broker that is down fails the start,
not the first request) and closes the app's connections when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel

from celeriac.errors import TimeoutError as ResultTimeout
from fastapi_service.tasks import add, app, divide, word_count

#: The longest a request may wait for a result (the client asks with ``?wait=``).
MAX_WAIT = 30.0


async def open_producer() -> None:
    """Connect this loop's producer and declare the app's queues: the first send is then one
    publish, and a broker that cannot be reached fails here, at start-up."""
    await app.producer.aopen(app.queues())


async def close_producer() -> None:
    """Close this loop's producer, then the app's other connections (the result backend)."""
    await app.producer.aclose()
    await asyncio.to_thread(app.close)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await open_producer()
    try:
        yield
    finally:
        await close_producer()


api = FastAPI(title="celeriac FastAPI example", lifespan=lifespan)


class Pair(BaseModel):
    x: int
    y: int


class Numbers(BaseModel):
    x: float
    y: float


class Text(BaseModel):
    text: str


class Sent(BaseModel):
    task_id: str


class Outcome(BaseModel):
    task_id: str
    state: str
    result: Any = None
    error: str | None = None


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@api.post("/add", status_code=202)
async def send_add(pair: Pair) -> Sent:
    """Send and return at once: the client polls (or waits on) ``/results/{task_id}``."""
    result = await add.adelay(pair.x, pair.y)
    return Sent(task_id=result.id)


@api.post("/divide", status_code=202)
async def send_divide(numbers: Numbers) -> Sent:
    result = await divide.adelay(numbers.x, numbers.y)
    return Sent(task_id=result.id)


@api.post("/word-count")
async def count_words(body: Text, wait: float = Query(10.0, gt=0, le=MAX_WAIT)) -> Outcome:
    """Send, then wait for the result within this request (up to ``wait`` seconds)."""
    result = await word_count.adelay(body.text)
    return await outcome(result.id, wait)


@api.get("/results/{task_id}", responses={202: {"description": "Not finished yet"}})
async def read_result(
    task_id: str, response: Response, wait: float = Query(0.0, ge=0, le=MAX_WAIT)
) -> Outcome:
    """The task's outcome; with ``?wait=N``, wait up to N seconds for it. Still running: 202."""
    found = await outcome(task_id, wait)
    if found.state == "PENDING":
        response.status_code = 202
    return found


async def outcome(task_id: str, wait: float) -> Outcome:
    """Await the result without blocking the loop; the task's own error is reported, not
    raised (``propagate=False`` returns it)."""
    if app.backend is None:
        raise HTTPException(503, "this service has no result backend")
    result = app.AsyncResult(task_id)
    try:
        value = await result.aget(timeout=wait, propagate=False)
    except ResultTimeout:
        return Outcome(task_id=task_id, state="PENDING")
    if isinstance(value, BaseException):
        return Outcome(task_id=task_id, state="FAILURE", error=repr(value))
    return Outcome(task_id=task_id, state="SUCCESS", result=value)
