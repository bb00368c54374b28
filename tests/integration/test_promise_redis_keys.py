"""No ``KEYS`` and key-prefix isolation on Redis, over two workers' whole lives.

The promise (docs/guide/brokers.md, "The native layout"): claims are Lua scripts with leases and
no ``KEYS``; keys live under ``key_prefix`` (broker and results), so several apps share one Redis
database. Two apps with two prefixes run a worker each (a subprocess with events on) on a Redis
server of this test's own (:mod:`redis_server`), so ``MONITOR`` sees every command sent to it
and nothing else's: tasks, a countdown, a retry, a chord, a saved group, a revoke, a purge and
remote control, from start-up to warm shutdown. Then no command was ``KEYS`` (in a script or
not), every key is under one of the two prefixes, each app's tasks ran on its own worker, and a
purge of one app's queue left the other's message alone.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.promise_tasks import BROKER_ENV, PREFIX_ENV, build_app
from redis_server import RedisServer
from worker_harness import WorkerProcess, child_env, on_transport, queue_size

from celeriac import Celeriac, TaskRevokedError, chord, group
from celeriac.transports.base import Transport
from conftest import require_service

pytestmark = pytest.mark.redis

WAIT = 15.0
PREFIXES = ("alpha:", "beta:")


class Monitor:
    """Every command the server executes, as ``MONITOR`` prints it, read by a thread."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.sock.settimeout(None)
        self.buffer = b""
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            self.buffer += chunk
            *complete, self.buffer = self.buffer.split(b"\r\n")
            self.lines += [line.decode("utf-8", "replace") for line in complete]

    def stop(self) -> list[str]:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)
        return self.lines

    @staticmethod
    def command(line: str) -> str:
        """``KEYS`` from ``+1700000000.1 [0 127.0.0.1:5000] "KEYS" "*"`` (and from ``[0 lua]``)."""
        _, _, rest = line.partition("] ")
        return rest.split(" ", 1)[0].strip('"').upper()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    require_service("Redis", 6379)  # the same needs as the shared server: redis-server here
    made = RedisServer(tmp_path)
    made.start()
    try:
        yield made
    finally:
        made.stop()


def start_worker(url: str, prefix: str, cwd: Path) -> WorkerProcess:
    node = f"{prefix.rstrip(':')}@promise"
    args = [sys.executable, "-m", "celeriac", "-A", "apps.promise_tasks", "worker"]
    args += ["-P", "threads", "-c", "2", "-E", "-n", node, "-l", "info"]
    return WorkerProcess(args, child_env({BROKER_ENV: url, PREFIX_ENV: prefix}), cwd)


def work(app: Celeriac, node: str) -> None:
    """Every kind of traffic a fleet sends, checked as it goes."""
    assert app.send_task("pr.whoami").get(timeout=WAIT) == node
    assert app.send_task("pr.add", (1, 2), countdown=0.3).get(timeout=WAIT) == 3
    assert app.send_task("pr.retry_once").get(timeout=WAIT) == "again"
    add, total = app.signature("pr.add"), app.signature("pr.total")
    header = [add.clone((i, i)) for i in range(4)]
    assert chord(header, total).apply_async().get(timeout=WAIT) == 12
    saved = group(add.clone((i, 1)) for i in range(3)).apply_async()
    saved.save()
    assert saved.get(timeout=WAIT) == [1, 2, 3]
    doomed = str(uuid.uuid4())
    app.control.revoke(doomed)
    with pytest.raises(TaskRevokedError):
        app.send_task("pr.add", (0, 0), task_id=doomed).get(timeout=WAIT)
    pongs = app.control.ping(destination=[node], timeout=5)
    assert pongs == [{node: {"ok": "pong"}}]


def waiting(app: Celeriac) -> int:
    return queue_size(app)


def purge(app: Celeriac) -> int:
    async def run(transport: Transport) -> int:
        return await transport.purge("celery")

    return on_transport(app, run)


def test_two_prefixed_apps_share_a_redis_with_no_keys_command(
    server: RedisServer, tmp_path: Path
) -> None:
    import redis

    monitor = Monitor(server.port)
    apps = {prefix: build_app(server.url, prefix=prefix) for prefix in PREFIXES}
    workers = [start_worker(server.url, prefix, tmp_path) for prefix in PREFIXES]
    try:
        for worker in workers:
            worker.wait_ready()
        for prefix, app in apps.items():
            work(app, f"{prefix.rstrip(':')}@promise")
        # a message far in the future on beta: alpha's purge must leave it alone
        later = apps["beta:"].send_task("pr.add", (5, 5), countdown=3600)
        apps["alpha:"].send_task("pr.add", (6, 6), countdown=3600)
        assert purge(apps["alpha:"]) == 1
        assert waiting(apps["beta:"]) == 1
        assert waiting(apps["alpha:"]) == 0
        for worker in workers:
            worker.send(signal.SIGTERM)
        for worker in workers:
            assert worker.wait_exit(WAIT) == 0, worker.output()
            assert "Traceback" not in worker.stderr(), worker.output()
        assert later.state == "PENDING"
    finally:
        for worker in workers:
            worker.stop()
        for app in apps.values():
            app.close()
        lines = monitor.stop()

    commands = [Monitor.command(line) for line in lines if line.startswith("+") and "] " in line]
    assert len(commands) > 100, lines[:20]  # the monitor saw the traffic
    assert "EVALSHA" in commands or "EVAL" in commands  # the claims are scripts...
    assert [line for line in lines if Monitor.command(line) == "KEYS"] == []  # ...without KEYS
    client = redis.Redis(port=server.port)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(count=1000))
    finally:
        client.close()
    assert keys, "the apps left no key at all: nothing was checked"
    assert [k for k in keys if not k.startswith(PREFIXES)] == []
    assert {k.split(":", 1)[0] + ":" for k in keys} == set(PREFIXES)
