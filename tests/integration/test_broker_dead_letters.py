"""Issue 19, point 4: a message the broker dead-letters by itself fails its task and workflow.

A message delivered ``max_deliveries`` times and never settled (each worker holding it died,
or lost its connection) is dead-lettered by the transport on the next claim, inside the claim.
Nobody ran it, so before this the task stayed PENDING for ever: a chord with such a member
waited for ever, a chain's later steps too, and a caller's ``get()`` never returned.

Here the deaths are real, as the broker sees them: a consumer of the test's own takes the
member's message and never settles it (on SQLite, Redis and the in-process broker its lease
runs out; on RabbitMQ its connection closes), as many times as the broker allows. Then a real
worker (in a thread) starts; its claim dead-letters the message, and the worker fails the
member with ``WorkerLostError``: the chord body fails with ``ChordError`` naming it, the
member's ``link_error`` runs, and the message waits in the dead-letter queue with its reason.
On the in-process broker, SQLite, Redis (both layouts) and RabbitMQ.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from worker_harness import wait_until

import amqp_broker
from celeriac import AsyncResult, Celeriac, ChordError, chord
from celeriac.errors import WorkerLostError
from celeriac.testing import worker_thread
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/14"
MAX_DELIVERIES = 2
TIMEOUT = 30.0


@dataclass
class Env:
    kind: str
    app: Celeriac
    doomed: str  # the queue of the member whose workers keep dying
    options: dict[str, Any]


def _make(kind: str, tmp_path: Path, tag: str) -> tuple[Celeriac, dict[str, Any]]:
    options: dict[str, Any] = {"max_deliveries": MAX_DELIVERIES, "lease_seconds": 0.3}
    if kind == "memory":
        url = f"memory://dead-{tag}"
        return Celeriac("dead", broker=url, backend=url, broker_transport_options=options), options
    if kind == "sqlite":
        db = f"sqlite:///{tmp_path / 'dead.db'}"
        return Celeriac("dead", broker=db, backend=db, broker_transport_options=options), options
    require_service("Redis", 6379)
    results = {"key_prefix": f"dead-{tag}:"}
    if kind == "redis":
        options["key_prefix"] = f"dead-{tag}:"
        broker = REDIS_URL
    elif kind == "kombu":  # Redis in kombu's layout (shared with Celery workers)
        options.update(layout="kombu", global_keyprefix=f"dead-{tag}:")
        broker = REDIS_URL
    else:
        require_service("RabbitMQ", 5672)
        amqp_broker.ensure_vhost()
        broker = amqp_broker.URL
    app = Celeriac(
        "dead",
        broker=broker,
        backend=REDIS_URL,
        broker_transport_options=options,
        result_backend_transport_options=results,
    )
    return app, options


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("kombu", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    tag = uuid.uuid4().hex[:10]
    app, options = _make(request.param, tmp_path, tag)
    doomed = f"doomed-{tag}"
    try:
        yield Env(request.param, app, doomed, options)
    finally:
        app.close()
        if request.param in ("redis", "kombu", "amqp"):
            delete_redis_keys(REDIS_URL, f"dead-{tag}:")
        if request.param == "amqp":
            amqp_broker.delete([doomed, f"{doomed}.dlq", "celery", "celery.dlq"])


def _declare(app: Celeriac, seen: list[str]) -> dict[str, Any]:
    @app.task(name="dead.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="dead.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="dead.on_error")
    def on_error(task_id: str) -> None:
        seen.append(task_id)

    return {"add": add, "tsum": tsum, "on_error": on_error}


def _let_it_die(env: Env, holds: int) -> None:
    """Take the doomed queue's one message ``holds`` times and never settle it, each time as a
    worker that died would: a lease left to run out, or a connection closed."""

    async def run() -> None:
        transport = env.app.create_transport()
        await transport.connect()
        try:
            for n in range(holds):
                if env.kind == "amqp" and n:
                    await transport.close()  # the message returns, marked redelivered
                    transport = env.app.create_transport()
                    await transport.connect()
                got = await transport.get([env.doomed], 1, TIMEOUT)  # waits out the lease
                assert len(got) == 1, f"hold {n + 1}: the doomed message did not come back"
        finally:
            await transport.close()

    asyncio.run(run())


def test_a_member_dead_lettered_by_the_broker_fails_its_chord(env: Env) -> None:
    seen: list[str] = []
    t = _declare(env.app, seen)
    member = t["add"].s(2, 2).set(queue=env.doomed, link_error=t["on_error"].s())
    result = chord([t["add"].s(1, 1), member, t["add"].s(3, 3)], t["tsum"].s()).apply_async()
    doomed_id = result.parent.children[1].id if result.parent is not None else None
    assert doomed_id is not None
    _let_it_die(env, MAX_DELIVERIES)

    with worker_thread(env.app, concurrency=2, queues=["celery", env.doomed]):
        # get() raises the member's own error, as Celery's does for a failed header member;
        # the body's stored outcome is the ChordError naming it
        with pytest.raises(WorkerLostError, match="dead-lettered by the broker"):
            result.get(timeout=TIMEOUT)
        body: AsyncResult[Any] = AsyncResult(result.id, app=env.app)
        assert body.state == "FAILURE"
        assert isinstance(body.result, ChordError) and doomed_id in str(body.result)
        member_result: AsyncResult[Any] = AsyncResult(doomed_id, app=env.app)
        assert member_result.state == "FAILURE"
        assert isinstance(member_result.result, WorkerLostError)

        async def letters() -> list[Any]:
            transport = env.app.create_transport()
            await transport.connect()
            try:
                return await transport.dead_letters(env.doomed)
            finally:
                await transport.close()

        dead = asyncio.run(letters())
        assert len(dead) == 1 and "max_deliveries=2" in dead[0].reason
        # the member's own link_error ran, as for a run that failed
        wait_until(lambda: seen == [doomed_id], TIMEOUT, "the member's link_error to run")
