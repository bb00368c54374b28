"""The brokers of the chaos runs, each with the faults only it can have.

* SQLite: a file on a small tmpfs of the test's own, which a filler file fills to the last byte:
  a real ENOSPC for every write, the WAL's included. ``PRAGMA max_page_count`` was the other
  way, but it is per connection: set from the test's connection, it never reaches the worker's.
  Mounting needs root (this machine's CI runs as root); elsewhere the disk-full fault is
  skipped, and the run says so.
* Redis: a private ``redis-server`` with an append-only file (the shared one keeps nothing on
  disk, and must not be restarted), reached by the workers through a fault proxy, restarted on
  its port. The transport options set ``socket_timeout=5``: with the transport's default (30 s), a
  half-open link holds every ack and claim for 30 s.
* RabbitMQ: the shared server through a fault proxy, in the tests' vhost, heartbeats every 2 s
  (a half-open link is noticed in seconds); a restart is ``stop_app``/``start_app``, which
  stops the shared server: only a serial test may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from chaos_run import Broker, ChaosRun
from fault_proxy import FaultProxy
from redis_server import RedisServer

import amqp_broker
from conftest import require_service

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
            options = {"key_prefix": "chaos:", "lease_seconds": LEASE, "socket_timeout": 5.0}

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


@contextlib.contextmanager
def sqlite_broker(tmp_path: Path) -> Iterator[Broker]:
    """SQLite on a tmpfs of its own when mounting works (``fill_disk`` set), else a plain dir."""
    with small_disk(tmp_path / "disk") as disk:
        where = disk or tmp_path / "disk"
        url = f"sqlite:///{where / 'broker.db'}"
        broker = Broker("sqlite", url, url, {"lease_seconds": LEASE}, lease=LEASE)
        if disk is not None:
            broker.fill_disk = lambda: fill(disk)
            broker.free_disk = lambda: (disk / "filler").unlink()
        yield broker
