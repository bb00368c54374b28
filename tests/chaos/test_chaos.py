"""The chaos suite: under a steady load, workers killed, frozen and cut off; every task counted.

One test per broker plays its fault schedule (:mod:`chaos_run`) ``CELERIAC_CHAOS_ROUNDS`` times (one
in the normal suite, many under ``make chaos``) and checks the accounts (:mod:`chaos_ledger`): none
lost, a duplicate only where a worker died or froze while running an ``acks_late`` task (their
number is printed), every worker alive and fetching at the end. Faults:

* every broker: ``kill -9`` of a prefork child, of a prefork worker and of a threads worker
  (each started again, as a supervisor would), SIGSTOP of a worker past its lease, then SIGCONT;
* Redis and RabbitMQ, through the fault proxy (:mod:`fault_proxy`): connections cut, delayed,
  left half-open, blackholed; a broker restart (Redis: a private ``redis-server`` with an
  append-only file; RabbitMQ: ``stop_app``/``start_app``, which stops the shared server, so
  that test is serial);
* SQLite: its disk full, then space given back. The broker file lives on a small tmpfs of the
  test's own, which a filler file fills to the last byte: a real ENOSPC for every write, the
  WAL's included (``PRAGMA max_page_count`` was the other way, but it is per connection: set
  from the test's connection, it would never reach the worker's). Mounting needs root (this
  machine's CI runs as root); elsewhere that fault is skipped, and the test says so.

The fetch watchdog (``src/celeriac/worker/watchdog.py``) has its own test here on a real fault:
Redis connections left half-open, which leave a worker's fetch waiting with work in the queue.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))  # the harness
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_fleet import STALL_LINE
from chaos_run import Broker, ChaosRun
from fault_proxy import FaultProxy
from redis_server import RedisServer

import amqp_broker
from conftest import require_service

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

LEASE = 3.0
TMPFS_SIZE = "24m"


# -- brokers ------------------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(directory: Path) -> Iterator[Path | None]:
    """A tmpfs of :data:`TMPFS_SIZE` mounted at ``directory`` (None where mount is refused)."""
    directory.mkdir()
    if os.geteuid() != 0:
        yield None
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        yield None
        return
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill(directory: Path) -> None:
    """Write a filler file until the filesystem has no byte left."""
    chunk = b"\0" * 65536
    with (directory / "filler").open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 512)


@contextlib.contextmanager
def redis_broker(tmp_path: Path) -> Iterator[Broker]:
    require_service("redis-server", 6379)  # the binary comes with the shared server
    server = RedisServer(tmp_path)
    server.start()
    try:
        with FaultProxy(server.port) as proxy:
            options = {"key_prefix": "chaos:", "lease_seconds": LEASE}

            def restart() -> None:
                server.stop()
                server.start()

            yield Broker(
                "redis",
                f"redis://127.0.0.1:{proxy.port}/0",
                server.url,
                options,
                lease=LEASE,
                proxy=proxy,
                restart=restart,
            )
    finally:
        server.stop()


def restart_rabbitmq() -> None:
    amqp_broker.stop_app()
    amqp_broker.start_app()


@contextlib.contextmanager
def amqp(tmp_path: Path) -> Iterator[Broker]:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    with FaultProxy(5672) as proxy:
        # heartbeats every 2 s: a half-open link is noticed in seconds, not minutes
        query = "?heartbeat=2"
        yield Broker(
            "amqp",
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/{amqp_broker.VHOST}{query}",
            f"{amqp_broker.URL}{query}",
            proxy=proxy,
            restart=restart_rabbitmq,
        )


def delete_amqp_queues(run: ChaosRun) -> None:
    names = [run.queue, *(run.fleet.private_queue(s) for s in run.fleet.slots)]
    amqp_broker.delete(queues=[*names, *(f"{n}.dlq" for n in names)])


# -- the runs -----------------------------------------------------------------------------------
def test_sqlite(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        where = disk or tmp_path / "disk"
        url = f"sqlite:///{where / 'broker.db'}"
        broker = Broker("sqlite", url, url, {"lease_seconds": LEASE}, lease=LEASE)
        faults = ["kill-child", "kill-parent", "freeze", "kill-threads"]
        if disk is not None:
            broker.fill_disk = lambda: fill(disk)
            broker.free_disk = lambda: (disk / "filler").unlink()
            faults.insert(2, "disk-full")
        else:
            print("\nchaos sqlite: no tmpfs (needs root): the disk-full fault is skipped")
        run = ChaosRun(broker, tmp_path, faults)
        run.run()


def test_redis(tmp_path: Path) -> None:
    with redis_broker(tmp_path) as broker:
        faults = ["kill-child", "cut", "kill-parent", "delay", "half-open", "freeze"]
        faults += ["blackhole", "restart", "kill-threads"]
        ChaosRun(broker, tmp_path, faults).run()


def test_amqp_network(tmp_path: Path) -> None:
    with amqp(tmp_path) as broker:
        run = ChaosRun(
            broker,
            tmp_path,
            ["kill-child", "cut", "kill-parent", "delay", "half-open", "freeze", "blackhole"],
        )
        try:
            run.run()
        finally:
            delete_amqp_queues(run)


@pytest.mark.serial
def test_amqp_restart(tmp_path: Path) -> None:
    with amqp(tmp_path) as broker:
        run = ChaosRun(broker, tmp_path, ["restart", "kill-parent"])
        try:
            run.run()
        finally:
            delete_amqp_queues(run)


# -- the watchdog -------------------------------------------------------------------------------
def test_watchdog_half_open_redis(tmp_path: Path) -> None:
    """Half-open connections under a steady load: the fetch waits on a link that answers
    nothing while the queue fills. The worker must say so (naming the queue) and fetch again
    by itself; nothing is lost."""
    with redis_broker(tmp_path) as broker:
        assert broker.proxy is not None
        run = ChaosRun(broker, tmp_path, ["half-open"], stall=2.0)
        run.fleet.slots.pop(0)  # one threads worker: nobody else fetches for it
        run.run()
        warned = [
            line
            for w in run.fleet.workers()
            for line in w.stderr().splitlines()
            if STALL_LINE in line
        ]
        assert warned, run.outputs()
        assert run.queue in warned[0] and "restarting the fetch" in warned[0], warned[0]
        again = "fetching again after"
        assert any(again in w.stderr() for w in run.fleet.workers()), run.outputs()


def test_fault_proxy_modes(tmp_path: Path) -> None:
    """The proxy itself: bytes relayed, delayed, cut, swallowed, frozen without a close."""
    import socket

    with (
        socket.create_server(("127.0.0.1", 0)) as upstream,
        FaultProxy(upstream.getsockname()[1]) as proxy,
    ):
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        server, _ = upstream.accept()
        server.settimeout(5)
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
        assert proxy.half_open() == 1
        client.sendall(b"lost")
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.recv(4)  # not forwarded, and not closed either
        assert proxy.cut() == 1
        with contextlib.suppress(ConnectionResetError):  # reset or closed: learnt at once
            assert client.recv(4) == b""
        client.close()
        server.close()
        proxy.blackhole()
        swallowed = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        server, _ = upstream.accept()
        swallowed.sendall(b"gone")
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.recv(4)
        proxy.heal()
        fresh = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        server2, _ = upstream.accept()
        fresh.sendall(b"back")
        server2.settimeout(5)
        assert server2.recv(4) == b"back"
        for sock in (swallowed, server, fresh, server2):
            sock.close()
        assert proxy.stats().accepted == 3
