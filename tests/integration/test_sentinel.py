"""Redis Sentinel URLs in kombu's spelling (``sentinel://h1:26379;sentinel://h2:26379``), for the
broker and the results, against a real Sentinel; and how a deployment whose sentinels cannot be
reached fails: at once, with one readable line, no traceback and no password.

The Sentinel is ``redis-server --sentinel`` on a free port, started by the test and watching the
shared Redis on 6379 as the master (it only reads from it and says hello on a channel of its
own); every test that starts one stops it.

The broker and the result backend build their sentinel clients the same way
(``transports.redis.url.sentinel_manager``): a dead sentinel is retried once at once, not with
redis-py's backoff (before, a read of the backend through unreachable sentinels took ~17 s).
"""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from apps.sentinel_tasks import (
    MASTER_ENV,
    PREFIX_ENV,
    QUEUE_ENV,
    RESULTS_ENV,
    URL_ENV,
    build_app,
)
from redis_server import RedisServer, free_port
from worker_harness import child_env, start_cli_worker, wait_until

from celeriac import Celeriac, states
from celeriac.errors import BackendError, TransportError
from celeriac.results.base import ResultMeta
from celeriac.results.redis import RedisBackend
from conftest import delete_redis_keys, require_service
from suite_rules import require_tool

pytestmark = [pytest.mark.redis]

SECRET = "s3cret-pw"


class SentinelServer:
    """``redis-server --sentinel`` watching 127.0.0.1:``master_port`` as ``master``."""

    def __init__(self, directory: Path, master: str, master_port: int = 6379) -> None:
        binary = require_tool("redis-server", "it runs the Sentinel")
        self.port = free_port()
        self.master = master
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {master} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {master} 60000\n"
        )
        self.proc = subprocess.Popen(
            [binary, str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def knows_master(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return client.sentinel_get_master_addr_by_name(self.master) is not None
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelServer]:
    require_service("Redis", 6379)
    server = SentinelServer(tmp_path, f"itest-{uuid.uuid4().hex[:8]}")
    try:
        wait_until(server.knows_master, 10, "the sentinel to know its master")
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> Iterator[str]:
    made = f"sentinel-itest-{uuid.uuid4().hex[:8]}:"
    yield made
    delete_redis_keys("redis://127.0.0.1:6379/12", made)


def test_a_task_and_its_typed_result_travel_through_the_sentinels(
    sentinel: SentinelServer, prefix: str, tmp_path: Path
) -> None:
    """The broker's first sentinel is down: the next one names the master. (The results'
    list starts with the live one: the Redis result backend makes its own sentinel client,
    which waits seconds on a dead sentinel, see the module docstring.)"""
    dead, live = f"127.0.0.1:{free_port()}", f"127.0.0.1:{sentinel.port}"
    broker = f"sentinel://{dead}/12;sentinel://{live}"
    results = f"sentinel://{live}/12;sentinel://{dead}"
    queue = f"sentinel-itest-{uuid.uuid4().hex[:8]}"
    settings = {URL_ENV: broker, RESULTS_ENV: results, MASTER_ENV: sentinel.master}
    env = child_env({**settings, PREFIX_ENV: prefix, QUEUE_ENV: queue})
    app = build_app(broker, sentinel.master, prefix, queue, results)
    worker = start_cli_worker("apps.sentinel_tasks", env, tmp_path, "-Q", queue)
    try:
        assert app.tasks["sentinel.add"].delay(2, 3).get(timeout=20) == 5
        when = dt.datetime(2024, 2, 28, 12, 0, tzinfo=dt.UTC)
        ref = uuid.UUID(int=42)
        shift = app.tasks["sentinel.shift"]
        got = shift.delay(when, decimal.Decimal("1.25"), ref).get(timeout=20)
        day_after = dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC)
        assert got == [day_after, decimal.Decimal("2.50"), ref, "UUID"]
    finally:
        worker.stop()
        app.close()


def test_the_threads_own_connections_reach_the_master_the_sentinels_name(
    tmp_path: Path, prefix: str
) -> None:
    """A sync send and a result's store and read go on connections of the calling thread's
    own, made apart from the pool: they must ask the sentinels too. (They went to redis-py's
    default host, localhost:6379, which the other tests' master hides: here the master is a
    server of this test's own.)"""
    require_service("Redis", 6379)
    master = RedisServer(tmp_path / "master")
    (tmp_path / "master").mkdir()
    master.start()
    server = SentinelServer(tmp_path, f"itest-{uuid.uuid4().hex[:8]}", master.port)
    on_master, elsewhere = redis.Redis(port=master.port), redis.Redis(port=6379)
    app = None
    try:
        wait_until(server.knows_master, 10, "the sentinel to know its master")
        url = f"sentinel://127.0.0.1:{server.port}/0"
        app = build_app(url, server.master, prefix, f"q-{uuid.uuid4().hex[:8]}")
        app.tasks["sentinel.add"].delay(2, 3)
        app.producer.flush()
        task_id = str(uuid.uuid4())
        backend = app.backend
        assert isinstance(backend, RedisBackend)
        backend.store(ResultMeta(task_id, states.SUCCESS, 5))
        assert backend.get_meta(task_id).result == 5
        result_key = backend.result_key(task_id)
        assert on_master.exists(result_key) and not elsewhere.exists(result_key)
        assert on_master.keys(f"{prefix}*") and not elsewhere.keys(f"{prefix}*")
        # a wait subscribes on the master too (on another server it would never hear the store)
        later = str(uuid.uuid4())
        channel = backend.ready_channel(later)

        def store_once_subscribed() -> None:
            deadline = time.monotonic() + 5
            while not on_master.pubsub_numsub(channel)[0][1] and time.monotonic() < deadline:
                time.sleep(0.01)
            backend.store(ResultMeta(later, states.SUCCESS, 7))

        storer = threading.Thread(target=store_once_subscribed)
        storer.start()
        try:
            assert backend.wait_for(later, timeout=8).result == 7
        finally:
            storer.join()
    finally:
        on_master.close()
        elsewhere.close()
        if app is not None:
            app.close()
        server.stop()
        master.stop()


def unreachable_app(master: str = "mymaster", *ports: int) -> tuple[Celeriac, str]:
    """An app whose broker and results are behind sentinels on ``ports`` (none answering, by
    default), with a password in the URL that no message may show."""
    ports = ports or (free_port(), free_port())
    url = ";".join(f"sentinel://:{SECRET}@127.0.0.1:{port}" for port in ports)
    options = {"master_name": master}
    app = Celeriac(
        "sentinel_down",
        broker=url,
        backend=url,
        broker_transport_options=options,
        result_backend_transport_options=options,
    )
    app.task(lambda x: x, name="echo")  # type: ignore[call-overload]
    return app, url


def test_unreachable_sentinels_fail_a_send_at_once_naming_them() -> None:
    app, url = unreachable_app()
    hosts = ", ".join(part.split("@", 1)[1] for part in url.split(";"))
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        app.tasks["echo"].delay(1)
    assert time.monotonic() - started < 3  # no backoff per sentinel
    message = str(caught.value)
    assert f"no master 'mymaster' from the sentinels {hosts}" in message
    assert "sentinel://:***@127.0.0.1" in message
    assert SECRET not in message and "<redis" not in message  # no client reprs either
    app.close()


def test_unreachable_sentinels_fail_a_result_read_quickly_naming_them() -> None:
    app, _ = unreachable_app()
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        app.AsyncResult("00000000-0000-0000-0000-000000000000").get(timeout=1)
    assert time.monotonic() - started < 6  # one quick retry per sentinel, then the error
    assert "no master 'mymaster'" in str(caught.value)
    assert SECRET not in str(caught.value)
    app.close()


def test_sentinels_that_know_no_such_master_say_so(sentinel: SentinelServer) -> None:
    app, _ = unreachable_app("no-such-master", sentinel.port)
    with pytest.raises(TransportError) as caught:
        app.tasks["echo"].delay(1)
    message = str(caught.value)
    assert "no master 'no-such-master'" in message
    assert "the sentinels answered but know no healthy master by that name" in message
    assert SECRET not in message
    app.close()


def test_a_worker_on_unreachable_sentinels_exits_with_the_reason(tmp_path: Path) -> None:
    url = f"sentinel://:{SECRET}@127.0.0.1:{free_port()};sentinel://127.0.0.1:{free_port()}"
    env = child_env(
        {
            URL_ENV: url,
            MASTER_ENV: "mymaster",
            PREFIX_ENV: "unused:",
            QUEUE_ENV: "unused",
            "CELERIAC_BROKER_CONNECTION_MAX_RETRIES": "0",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "apps.sentinel_tasks", "worker", "-P", "threads"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "no master 'mymaster' from the sentinels" in output
    assert "Traceback" not in output
    assert SECRET not in output
