"""One session's mixed fleet on one broker: its place there (a RabbitMQ vhost, or a Redis key
prefix), the Celery and celeriac workers it starts, a client app of each kind, Celery's command
line; :meth:`Fleet.close` always leaves nothing behind (workers stopped, the vhost deleted with
every queue, exchange and stream in it, every Redis key under the prefix deleted).

Workers are :class:`worker_harness.WorkerProcess` children (output read as it comes, waits on
lines with deadlines); a Celery worker only differs in the line that says it is ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from worker_harness import READY_TIMEOUT, WorkerProcess, child_env

import amqp_broker
from celeriac import Celeriac
from conftest import delete_redis_keys
from interop.names import REDIS_BROKER, Names

TESTS_DIR = Path(__file__).resolve().parents[1]
#: kombu's Redis priority lists of a queue: the queue's own name, then ``\x06\x16<step>``.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
CELERY_APP = "interop.celery_side"
CELERIAC_APP = "interop.celeriac_side"


def redis_queue_counts(prefix: str, queue: str) -> tuple[int, int]:
    import redis

    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        ready = sum(int(client.llen(f"{prefix}{queue}{s}")) for s in PRIORITY_SUFFIXES)
        records = client.hvals(f"{prefix}unacked")
    finally:
        client.close()
    unacked = sum(1 for raw in records if json.loads(raw)[2] == queue)
    return ready, unacked


class CeleryWorkerProcess(WorkerProcess):
    """``celery worker``: ready when it logs ``<node> ready.``."""

    node = ""

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        return self.wait_for_line(rf"{re.escape(self.node)} ready\.", timeout)


class Fleet:
    """The session's names, workers and clients (see the module's docstring)."""

    def __init__(self, root: Path, kind: str = "amqp") -> None:
        runs = root / "runs"
        runs.mkdir(parents=True)
        self.root = root
        self.runs = runs
        self.names = Names(uuid.uuid4().hex[:8], str(runs), kind)
        self.workers: list[WorkerProcess] = []
        self._celery: Any = None
        self._celeriac: Celeriac | None = None
        self._vhost = False

    def open(self) -> None:
        """Create the session's vhost on RabbitMQ (the services were checked by the caller);
        on Redis the prefix is all there is."""
        if self.names.kind != "amqp":
            return
        amqp_broker.rabbitmqctl("add_vhost", self.names.vhost)
        self._vhost = True
        amqp_broker.rabbitmqctl(
            "set_permissions", "-p", self.names.vhost, "guest", ".*", ".*", ".*"
        )

    def queue_counts(self, queue: str) -> tuple[int, int]:
        """``(ready, unacknowledged)`` messages of ``queue``, as the broker counts them (on
        Redis: its four priority lists, and kombu's ``unacked`` records routed to it)."""
        if self.names.kind == "redis":
            return redis_queue_counts(self.names.prefix, queue)
        out = amqp_broker.rabbitmqctl(
            "list_queues", "-q", "-p", self.names.vhost, "--no-table-headers",
            "name", "messages_ready", "messages_unacknowledged",
        )  # fmt: skip
        for line in out.splitlines():
            name, ready, unacked = line.split("\t")
            if name == queue:
                return int(ready), int(unacked)
        raise AssertionError(f"no queue {queue!r} in {out!r}")

    # -- clients --------------------------------------------------------------------------
    @property
    def celery(self) -> Any:
        """A Celery 5.7 client app of the project (not the current app of this process)."""
        if self._celery is None:
            from interop.celery_side import build_app

            self._celery = build_app(self.names, current=False)
        return self._celery

    @property
    def celeriac(self) -> Celeriac:
        """The same project's celeriac client app."""
        if self._celeriac is None:
            from interop.celeriac_side import build_app

            self._celeriac = build_app(self.names)
        return self._celeriac

    # -- processes ------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: the session's names, ``interop`` importable."""
        env = child_env({**self.names.env(), **extra})
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p
        )
        return env

    def start_celeriac_worker(
        self,
        node: str,
        queues: Sequence[str],
        *extra: str,
        pool: str = "prefork",
        concurrency: int = 2,
        wait: bool = True,
    ) -> WorkerProcess:
        """``celeriac -A interop.celeriac_side worker``, with task events (``-E``)."""
        args = [sys.executable, "-m", "celeriac", "-A", CELERIAC_APP, "worker", "-E"]
        args += ["-n", node, "-Q", ",".join(queues), "-P", pool, "-c", str(concurrency)]
        worker = WorkerProcess([*args, "-l", "info", *extra], self.env(), self.root)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def start_celery_worker(
        self,
        node: str,
        queues: Sequence[str],
        *extra: str,
        pool: str = "prefork",
        concurrency: int = 2,
        wait: bool = True,
    ) -> WorkerProcess:
        """``celery -A interop.celery_side worker``, with task events (``-E``)."""
        args = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-E"]
        args += ["-n", node, "-Q", ",".join(queues), "-P", pool, "-c", str(concurrency)]
        worker = CeleryWorkerProcess([*args, "-l", "info", *extra], self.env(), self.root)
        worker.node = node
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    @contextlib.contextmanager
    def stopping(self, *workers: WorkerProcess) -> Iterator[None]:
        """Stop ``workers`` when the block ends, however it ends (a test's own workers)."""
        try:
            yield
        finally:
            for worker in workers:
                worker.send(signal.SIGTERM)
            for worker in workers:
                worker.stop()

    def celery_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``celery -A interop.celery_side ARGS`` to completion."""
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", CELERY_APP, *args],
            env=self.env(),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def close(self) -> None:
        """Stop every worker (all at once: their shutdowns overlap), close the clients, delete
        the vhost and the results."""
        try:
            for worker in self.workers:
                worker.send(signal.SIGTERM)
            for worker in self.workers:
                worker.stop()
        finally:
            try:
                if self._celeriac is not None:
                    self._celeriac.close()
                if self._celery is not None:
                    self._celery.close()
            finally:
                delete_redis_keys(self.names.results, self.names.prefix)
                if self._vhost:
                    amqp_broker.rabbitmqctl("delete_vhost", self.names.vhost)
