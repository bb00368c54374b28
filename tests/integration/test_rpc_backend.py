"""``rpc://`` against the real RabbitMQ and Redis: the caller-side contract, then real workers.

The backend tests pair two backends, each with its own connection: ``caller`` (its reply queue)
and ``worker`` (publishes records carrying that queue as ``reply_to``), as the two processes of
a deployment would; each runs with replies over RabbitMQ and over Redis (a reply list). The
end-to-end tests run a real worker process: on a Redis broker with results over ``rpc://`` on
the RabbitMQ, on RabbitMQ with ``rpc://`` over it, and on Redis with ``rpc://`` over Redis; and
one in another process that proves results reach only the process that sent the task.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis
from apps.rpc_tasks import BACKEND_ENV, BROKER_ENV, PREFIX_ENV, QUEUE_ENV, RESULTS, Boom, build_app
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_until

from celeriac import Celeriac, chain, chord, group, states
from celeriac.errors import ImproperlyConfigured, TaskRevokedError, TimeoutError
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.results.result import AsyncResult
from celeriac.results.rpc.backend import CHORD_LIMIT, RPCBackend
from celeriac.results.rpc.redis_link import reply_key
from conftest import delete_redis_keys, require_service
from suite_rules import require_tool

pytestmark = [pytest.mark.amqp, pytest.mark.redis]

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
PYAMQP = "pyamqp://guest:guest@127.0.0.1:5672//"
REDIS_BROKER = "redis://127.0.0.1:6379/13"


def _redis_options(prefix: str) -> dict[str, object]:
    return {"key_prefix": prefix}


@pytest.fixture(params=["amqp", "redis"])
def via(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which server the replies of ``caller`` and ``worker`` travel over; for Redis, the key
    prefix of this test (its keys are deleted after it)."""
    if request.param == "amqp":
        require_service("RabbitMQ", 5672)
        yield "amqp"
        return
    require_service("Redis", 6379)
    prefix = f"rpc-itest-{uuid.uuid4().hex[:8]}:"
    yield prefix
    delete_redis_keys(REDIS_BROKER, prefix)


def rpc_backend(via: str, *, own_server: bool = False, **options: Any) -> RPCBackend:
    """An rpc backend whose replies go over ``via``: the RabbitMQ (as the broker, or named in
    the URL with ``own_server``), or the Redis broker under the prefix ``via``."""
    if via == "amqp":
        if own_server:
            return RPCBackend("rpc://guest:guest@127.0.0.1:5672//", **options)
        return RPCBackend("rpc://", broker_url=AMQP, **options)
    return RPCBackend(
        "rpc://", broker_url=REDIS_BROKER, broker_options=_redis_options(via), **options
    )


@pytest.fixture
def caller(via: str) -> Iterator[RPCBackend]:
    backend = rpc_backend(via)
    yield backend
    backend.close()


@pytest.fixture
def worker(via: str) -> Iterator[RPCBackend]:
    backend = rpc_backend(via, own_server=True)
    yield backend
    backend.close()


def tid() -> str:
    return f"rpc-itest-{uuid.uuid4().hex}"


def done(caller: RPCBackend, task_id: str, value: object = 42) -> ResultMeta:
    return ResultMeta(task_id, states.SUCCESS, value, reply_to=caller.reply_to)


# -- the backend, caller and worker sides ----------------------------------------------------
def test_a_result_published_before_the_wait_is_seen(caller: RPCBackend, worker: RPCBackend) -> None:
    task_id = tid()
    worker.store(done(caller, task_id))
    meta = caller.wait_for(task_id, 5)
    assert (meta.status, meta.result) == (states.SUCCESS, 42)
    assert meta.date_done is not None
    assert caller.get_meta(task_id).result == 42  # kept for a second read


def test_a_wait_wakes_on_a_store_from_another_thread(
    caller: RPCBackend, worker: RPCBackend
) -> None:
    task_id = tid()
    meta = done(caller, task_id, "late")
    threading.Timer(0.2, worker.store, (meta,)).start()
    started = time.monotonic()
    assert caller.wait_for(task_id, 10).result == "late"
    assert 0.15 < time.monotonic() - started < 5


def test_a_store_from_another_process(caller: RPCBackend, via: str) -> None:
    task_id = tid()
    broker, options = (AMQP, {}) if via == "amqp" else (REDIS_BROKER, _redis_options(via))
    script = textwrap.dedent(
        f"""
        from celeriac.results.base import ResultMeta
        from celeriac.results.rpc import RPCBackend
        backend = RPCBackend("rpc://", broker_url={broker!r}, broker_options={options!r})
        backend.store(ResultMeta({task_id!r}, "STARTED", reply_to={caller.reply_to!r}))
        backend.store(ResultMeta({task_id!r}, "SUCCESS", [1, 2], reply_to={caller.reply_to!r}))
        backend.close()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert caller.wait_for(task_id, 10).result == [1, 2]


def test_a_timeout_reads_pending_and_the_latest_state(
    caller: RPCBackend, worker: RPCBackend
) -> None:
    task_id = tid()
    assert caller.wait_for(task_id, 0.2).status == states.PENDING
    worker.store(ResultMeta(task_id, states.STARTED, reply_to=caller.reply_to))
    deadline = time.monotonic() + 5
    while caller.get_meta(task_id).status != states.STARTED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert caller.wait_for(task_id, 0.1).status == states.STARTED
    with pytest.raises(TimeoutError):
        AsyncResult(task_id, caller).get(timeout=0.1)


def test_a_failure_is_raised_with_its_own_type(caller: RPCBackend, worker: RPCBackend) -> None:
    task_id = tid()
    worker.store(
        ResultMeta(
            task_id,
            states.FAILURE,
            exception_to_dict(Boom("bad")),
            "Traceback...",
            reply_to=caller.reply_to,
        )
    )
    with pytest.raises(Boom, match="bad"):
        AsyncResult(task_id, caller).get(timeout=5)
    assert caller.get_meta(task_id).traceback == "Traceback..."


def test_many_concurrent_waiters_and_one_batch(caller: RPCBackend, worker: RPCBackend) -> None:
    ids = [tid() for _ in range(200)]
    results: dict[str, object] = {}

    def wait(task_id: str) -> None:
        results[task_id] = caller.wait_for(task_id, 15).result

    threads = [threading.Thread(target=wait, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    worker.store_many([done(caller, i, n) for n, i in enumerate(ids)])
    for thread in threads:
        thread.join(20)
    assert results == {i: n for n, i in enumerate(ids)}


def test_async_twins(caller: RPCBackend, worker: RPCBackend) -> None:
    reply_to = caller.reply_to

    async def main() -> None:
        first, second = tid(), tid()
        waiting = asyncio.create_task(caller.await_for(first, 10))
        await asyncio.sleep(0.05)
        await worker.astore(ResultMeta(first, states.SUCCESS, "a", reply_to=reply_to))
        assert (await waiting).result == "a"
        assert (await caller.await_for(second, 0.1)).status == states.PENDING
        await worker.astore(ResultMeta(second, states.SUCCESS, "b", reply_to=reply_to))
        assert await AsyncResult(second, caller).aget(timeout=10) == "b"

    asyncio.run(main())


def test_the_reply_queue_survives_a_connection_the_broker_drops() -> None:
    require_service("RabbitMQ", 5672)
    ctl = require_tool("rabbitmqctl", "to close one connection from the broker's side")
    worker = rpc_backend("amqp", own_server=True)
    name = f"rpc-itest-{uuid.uuid4().hex[:8]}"
    caller = RPCBackend("rpc://", broker_url=AMQP, connection_name=name)
    try:
        reply_to = caller.reply_to  # declares and consumes
        listing = subprocess.run(
            [ctl, "-q", "list_connections", "pid", "client_properties"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        pids = [line.split("\t")[0] for line in listing.splitlines() if name in line]
        assert len(pids) == 1, listing
        subprocess.run(
            [ctl, "close_connection", pids[0], "rpc test drop"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        task_id = tid()
        # published while the caller may still be away: it waits in the queue
        worker.store(ResultMeta(task_id, states.SUCCESS, "after", reply_to=reply_to))
        assert caller.wait_for(task_id, 15).result == "after"
        assert caller.reply_to == reply_to  # the same queue, consumed again
    finally:
        caller.close()
        worker.close()


def test_close_deletes_the_reply_queue(caller: RPCBackend, via: str) -> None:
    name = caller.reply_to
    reader = getattr(caller._link, "_reader", None)  # the Redis link's reader thread
    caller.close()
    if via != "amqp":
        assert reader is not None and not reader.is_alive()
        client = redis.Redis.from_url(REDIS_BROKER)
        try:
            assert client.exists(reply_key(_redis_options(via), name)) == 0
            readers = [c for c in client.client_list() if c["name"] == f"celeriac-rpc:{name}"]
        finally:
            client.close()
        assert readers == []  # the reader closed its connection
        return

    async def exists() -> bool:
        connection = await aio_pika.connect(AMQP)
        try:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True
        finally:
            await connection.close()

    assert not asyncio.run(exists())


# -- over Redis: the reply list ------------------------------------------------------------------
@pytest.fixture
def redis_prefix() -> Iterator[str]:
    require_service("Redis", 6379)
    prefix = f"rpc-itest-{uuid.uuid4().hex[:8]}:"
    yield prefix
    delete_redis_keys(REDIS_BROKER, prefix)


def test_replies_nobody_reads_expire(redis_prefix: str) -> None:
    """A caller that died leaves its replies behind for ``reply_queue_expires`` at most."""
    worker = rpc_backend(redis_prefix, reply_queue_expires=7)
    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        gone = "celeriac.reply.gone"
        worker.store_many([ResultMeta(tid(), states.SUCCESS, n, reply_to=gone) for n in range(3)])
        key = reply_key(_redis_options(redis_prefix), gone)
        assert client.llen(key) == 3
        assert 0 < client.ttl(key) <= 7
    finally:
        client.close()
        worker.close()


def test_the_reader_survives_a_connection_redis_drops(redis_prefix: str) -> None:
    caller, worker = rpc_backend(redis_prefix), rpc_backend(redis_prefix)
    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        reply_to = caller.reply_to  # starts the reader
        name = f"celeriac-rpc:{reply_to}"
        wait_until(lambda: any(c["name"] == name for c in client.client_list()), 5, "the reader")
        (reader,) = [c for c in client.client_list() if c["name"] == name]
        assert client.client_kill_filter(_id=reader["id"]) == 1
        task_id = tid()
        # sent while the reader may be away: it waits in the list
        worker.store(ResultMeta(task_id, states.SUCCESS, "after", reply_to=reply_to))
        assert caller.wait_for(task_id, 15).result == "after"
        assert caller.reply_to == reply_to
        assert any(c["name"] == name for c in client.client_list())  # reconnected
    finally:
        client.close()
        worker.close()
        caller.close()


# -- real workers ------------------------------------------------------------------------------
class Deployment:
    """A worker process and the test's own app: a Redis broker with ``rpc://`` results on the
    RabbitMQ, or ``rpc://`` over the broker (RabbitMQ or Redis)."""

    def __init__(self, tmp_path: Path, broker: str, backend: str = "rpc://") -> None:
        self.broker = broker
        self.backend = backend
        self.prefix = f"rpc-itest-{uuid.uuid4().hex[:8]}:"
        self.queue = f"rpc-itest-{uuid.uuid4().hex[:8]}"
        self.dir = tmp_path
        self.app: Celeriac = build_app(broker, self.prefix, self.queue, self.backend)
        self.workers: list[WorkerProcess] = []

    def env(self) -> dict[str, str]:
        return child_env(
            {
                BROKER_ENV: self.broker,
                BACKEND_ENV: self.backend,
                PREFIX_ENV: self.prefix,
                QUEUE_ENV: self.queue,
            }
        )

    def start_worker(self, pool: str = "threads") -> WorkerProcess:
        env, cwd = self.env(), self.dir
        worker = start_cli_worker("apps.rpc_tasks", env, cwd, "-Q", self.queue, pool=pool)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.app.close()
        if self.broker in (AMQP, PYAMQP):
            asyncio.run(_delete_queue(self.queue))
            return
        delete_redis_keys(REDIS_BROKER, self.prefix)  # this test's keys on the shared Redis


async def _delete_queue(name: str) -> None:
    """The test's task queue and the dead-letter queue the AMQP transport made beside it."""
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
        await channel.queue_delete(f"{name}.dlq")
    finally:
        await connection.close()


DEPLOYMENTS = {
    "redis-broker": (REDIS_BROKER, RESULTS),  # results on a RabbitMQ named in the URL
    "amqp-broker": (AMQP, "rpc://"),  # replies over the broker: RabbitMQ
    "redis-rpc": (REDIS_BROKER, "rpc://"),  # replies over the broker: Redis lists
}


@pytest.fixture(params=sorted(DEPLOYMENTS))
def deployment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    broker, backend = DEPLOYMENTS[request.param]
    if broker == REDIS_BROKER:
        require_service("Redis", 6379)
    if broker == AMQP or backend == RESULTS:
        require_service("RabbitMQ", 5672)
    made = Deployment(tmp_path, broker, backend)
    yield made
    made.close()


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_delay_get_through_a_real_worker(deployment: Deployment, pool: str) -> None:
    deployment.start_worker(pool)
    app = deployment.app
    add = app.tasks["rpc.add"]
    assert add.delay(2, 3).get(timeout=20) == 5
    results = [add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=20) for r in results] == [2 * i for i in range(20)]
    with pytest.raises(Boom, match="no"):
        app.tasks["rpc.boom"].delay("no").get(timeout=20)
    assert app.tasks["rpc.flaky"].delay(7).get(timeout=20) == 7  # retried twice on the way


def test_a_task_that_expired_before_it_ran_reports_revoked(deployment: Deployment) -> None:
    """The worker settles it without running it: the REVOKED record still reaches the caller
    (it carries the message's reply_to), so get() raises at once instead of timing out."""
    deployment.start_worker()
    add = deployment.app.tasks["rpc.add"]
    with pytest.raises(TaskRevokedError, match="expired"):
        add.apply_async((1, 1), expires=-1).get(timeout=20)


def test_workflows_report_to_the_caller_and_chords_are_refused(deployment: Deployment) -> None:
    deployment.start_worker()
    app = deployment.app
    add, tsum = app.tasks["rpc.add"], app.tasks["rpc.tsum"]
    # the chain's later steps are sent by the worker: they inherit the caller's reply queue
    assert chain(add.s(1, 2), add.s(10), add.s(100)).apply_async().get(timeout=20) == 113
    assert group(add.s(i, i) for i in range(5)).apply_async().get(timeout=20) == [0, 2, 4, 6, 8]
    with pytest.raises(ImproperlyConfigured) as caught:
        chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    assert str(caught.value) == CHORD_LIMIT


def test_another_process_does_not_see_the_result(deployment: Deployment) -> None:
    deployment.start_worker()
    result = deployment.app.tasks["rpc.add"].delay(20, 22)
    assert result.get(timeout=20) == 42
    script = textwrap.dedent(
        f"""
        from apps.rpc_tasks import build_app
        from celeriac.errors import TimeoutError
        app = build_app(
            {deployment.broker!r}, {deployment.prefix!r}, {deployment.queue!r},
            {deployment.backend!r},
        )
        try:
            app.AsyncResult({result.id!r}).get(timeout=1)
        except TimeoutError:
            print("TIMEOUT", app.AsyncResult({result.id!r}).state)
        app.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "TIMEOUT PENDING"


def test_a_real_task_through_pyamqp(tmp_path: Path) -> None:
    """kombu's ``pyamqp://`` spelling of a RabbitMQ URL, for the broker and (through it) rpc://."""
    require_service("RabbitMQ", 5672)
    made = Deployment(tmp_path, PYAMQP)
    try:
        made.start_worker()
        assert made.app.tasks["rpc.add"].delay(40, 2).get(timeout=20) == 42
    finally:
        made.close()
