"""The FastAPI example (examples/fastapi_service/) driven as a client would, with its lifespan,
against a real worker process on SQLite: sends with ``adelay``, results awaited with ``aget``,
and the event loop free while a request waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi_service import api as service
from fastapi_service.tasks import app

from celeriac.errors import TransportError
from celeriac.testing import WorkerProcess, worker_process
from conftest import delete_redis_keys, require_service

#: What the example's README tells a user to run (from examples/).
APP_SPEC = "fastapi_service.tasks"


REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture(params=["sqlite", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The example's app pointed at a broker and result store of this test's own: a SQLite
    file, or Redis under a key prefix of its own (Redis results are awaited natively)."""
    app.close()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/broker.db"
        app.conf.update(broker_url=url, result_backend=url)
        yield url
        app.close()
        return
    require_service("Redis", 6379)
    options = {"key_prefix": f"fastapi-example-{uuid.uuid4().hex[:12]}:"}
    app.conf.update(
        broker_url=REDIS_URL,
        result_backend=REDIS_URL,
        broker_transport_options=options,
        result_backend_transport_options=options,
    )
    try:
        yield REDIS_URL
    finally:
        app.close()
        delete_redis_keys(REDIS_URL, options["key_prefix"])
        app.conf.update(broker_transport_options={}, result_backend_transport_options={})


def start_worker() -> contextlib.AbstractContextManager[WorkerProcess]:
    return worker_process(app, app_spec=APP_SPEC, concurrency=2)


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The service with its lifespan run (ASGITransport does not run it), and a client."""
    async with service.lifespan(service.api):
        transport = httpx.ASGITransport(app=service.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            yield http


def test_send_then_await_results_from_a_worker_process(broker: str) -> None:
    async def scenario() -> None:
        async with client() as http:
            sent = await http.post("/add", json={"x": 2, "y": 3})
            assert sent.status_code == 202
            task_id = sent.json()["task_id"]
            done = await http.get(f"/results/{task_id}", params={"wait": 20})
            assert done.status_code == 200
            assert done.json() == {
                "task_id": task_id,
                "state": "SUCCESS",
                "result": 5,
                "error": None,
            }

            counted = await http.post(
                "/word-count", params={"wait": 20}, json={"text": "to be or not to be"}
            )
            assert counted.json()["result"] == {"to": 2, "be": 2, "or": 1, "not": 1}

            failed = await http.post("/divide", json={"x": 1, "y": 0})
            outcome = await http.get(f"/results/{failed.json()['task_id']}", params={"wait": 20})
            assert outcome.json()["state"] == "FAILURE"
            assert "ZeroDivisionError" in outcome.json()["error"]

            bad = await http.get(f"/results/{task_id}", params={"wait": 31})
            assert bad.status_code == 422  # past MAX_WAIT: refused, naming the parameter
            assert bad.json()["detail"][0]["loc"] == ["query", "wait"]

    with start_worker():
        asyncio.run(scenario())


def test_a_request_awaiting_a_result_does_not_block_the_others(broker: str) -> None:
    """No worker runs at first, so the result cannot come: one request waits on it while
    others are sent and answered; then a worker starts, and the waiting request gets it. A
    blocking wait (``get()`` in an async endpoint) would hold every other request until its
    timeout, and this test would fail."""

    async def scenario() -> None:
        async with client() as http, contextlib.AsyncExitStack() as stack:
            first = (await http.post("/add", json={"x": 20, "y": 22})).json()["task_id"]
            waiting = asyncio.create_task(
                http.get(f"/results/{first}", params={"wait": 30}), name="waiting"
            )
            await asyncio.sleep(0)  # let it start waiting
            assert (await http.get("/health")).json() == {"status": "ok"}
            second = (await http.post("/add", json={"x": 1, "y": 1})).json()["task_id"]
            pending = await http.get(f"/results/{second}")
            assert pending.status_code == 202
            assert pending.json()["state"] == "PENDING"
            assert not waiting.done()

            await asyncio.to_thread(stack.enter_context, start_worker())
            answered = await waiting
            assert answered.json()["result"] == 42
            done = await http.get(f"/results/{second}", params={"wait": 20})
            assert done.json()["result"] == 2

    asyncio.run(scenario())


def test_the_lifespan_fails_the_start_when_the_broker_cannot_be_reached(tmp_path: Path) -> None:
    """Opening the producer at start-up meets a broker that does not answer (nothing listens
    on port 1): the service does not start, with the broker's error."""
    app.close()
    app.conf.update(broker_url="redis://127.0.0.1:1/0", result_backend=f"sqlite:///{tmp_path}/r.db")

    async def start() -> None:
        async with service.lifespan(service.api):
            raise AssertionError("the service started")

    try:
        with pytest.raises(TransportError, match=r"127\.0\.0\.1:1"):
            asyncio.run(start())
    finally:
        app.close()
