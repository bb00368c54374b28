"""A dashboard fed by a real worker on a real broker (SQLite, Redis or RabbitMQ), for the browser
suite: one broker place of the test module's own, one worker process (``-E``), one ``celeriac
dashboard`` process, and the test side's app on the same broker; every process stopped and the
broker's keys or queues deleted at the end, however the module went.

* **sqlite**: a file in the module's tmp dir;
* **redis**: database 13 under a key prefix of the module's own, reached with a URL that holds
  a password (``default:<random>@``: Redis's default user takes any password when it has none),
  so that the suite can check the password is never shown;
* **amqp**: the tests' vhost (``tests/amqp_broker.py``), a default queue of the module's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dashboard_tasks import BROKER_ENV, OPTIONS_ENV, QUEUE_ENV, build_app
from served import free_port, start_dashboard
from worker_harness import WorkerProcess, child_env

import amqp_broker
from _secrets_scan import register_secret
from celeriac import Celeriac
from celeriac.transports.base import DeadLetter, Transport
from conftest import delete_redis_keys, require_service

T = TypeVar("T")
DASHBOARD_DIR = Path(__file__).resolve().parent
APP_SPEC = "dashboard_tasks"
BROKERS = ("sqlite", "redis", "amqp")
WORKER_ARGS = [sys.executable, "-m", "celeriac", "-A", APP_SPEC, "worker"]
WORKER_ARGS += ["-P", "threads", "-c", "2", "-l", "info", "-E"]
#: The key that signs sessions: fixed, so that a session outlives a restart of the dashboard.
SESSION_KEY = "session-key-of-the-dashboard-browser-tests"


@dataclass
class Broker:
    """One broker as the suite uses it: URL, options, the module's own queue names."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    queue: str = field(default_factory=lambda: f"dash-{uuid.uuid4().hex[:8]}")
    #: The secret in the URL that no page may show (None: the URL holds none of its own).
    password: str | None = None

    @property
    def parked(self) -> str:
        """A queue no worker consumes: what is sent there waits, so its depth can be seen."""
        return f"{self.queue}-parked"

    def env(self) -> dict[str, str]:
        env = child_env(
            {
                BROKER_ENV: self.url,
                OPTIONS_ENV: json.dumps(self.options),
                QUEUE_ENV: self.queue,
            }
        )
        env["PYTHONPATH"] = os.pathsep.join([str(DASHBOARD_DIR), env["PYTHONPATH"]])
        return env


@contextlib.contextmanager
def open_broker(name: str, tmp_path: Path) -> Iterator[Broker]:
    if name == "sqlite":
        yield Broker(name, f"sqlite:///{tmp_path / 'broker.db'}")
        return
    if name == "redis":
        require_service("Redis", 6379)
        password = secrets.token_hex(12)
        register_secret(password, "tests/dashboard/fleet.py broker password")
        url = f"redis://default:{password}@127.0.0.1:6379/13"
        prefix = f"itest-dash-{uuid.uuid4().hex[:8]}:"
        try:
            yield Broker(name, url, {"key_prefix": prefix}, password=password)
        finally:
            delete_redis_keys(url, prefix)
        return
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    queue = f"dash-{uuid.uuid4().hex[:8]}"
    # beat's queues (the beat page reads them) under the module's own prefix, not the default
    found = Broker(name, amqp_broker.URL, {"beat_queue_prefix": f"{queue}-beat"}, queue)
    try:
        yield found
    finally:
        queues = [found.queue, found.parked]
        beat = [f"{queue}-beat.{kind}" for kind in ("leader", "state", "view", "commands")]
        amqp_broker.delete(queues=[*queues, *(f"{q}.dlq" for q in queues), *beat])


class Fleet:
    """The broker, the worker, the dashboard and the test's app of one browser module."""

    def __init__(self, broker: Broker, directory: Path) -> None:
        self.broker = broker
        self.dir = directory
        self.db = directory / "history.db"
        self.worker_name = f"w1@dash-{broker.name}"
        self.app: Celeriac = build_app(broker.url, broker.options, broker.queue)
        self.processes: list[WorkerProcess] = []
        self.dashboard: WorkerProcess | None = None
        #: The same port on every start, so that ``url`` holds across a restart.
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """The dashboard and the worker, started side by side (each waits for the broker)."""
        worker = WorkerProcess([*WORKER_ARGS, "-n", self.worker_name], self.broker.env(), self.dir)
        self.processes.append(worker)
        self.start_dashboard()
        worker.wait_ready()
        self.worker = worker

    def start_worker(self, name: str) -> WorkerProcess:
        """A worker (threads, 2 slots, task events on) on the default queue."""
        worker = WorkerProcess([*WORKER_ARGS, "-n", name], self.broker.env(), self.dir)
        self.processes.append(worker)
        worker.wait_ready()
        return worker

    def start_dashboard(self) -> None:
        """The dashboard on the history file (the same file each time: a restart keeps it)."""
        # on Redis at debug: the access log on, every logger heard, and the suite checks that
        # no secret is in the log; elsewhere info, cheaper (aiormq logs each AMQP frame)
        level = "debug" if self.broker.name == "redis" else "info"
        args = ("--poll-interval", "0.5", "-Q", self.broker.parked, "-l", level)
        self.dashboard, _ = start_dashboard(
            APP_SPEC,
            {**self.broker.env(), "CELERIAC_DASHBOARD_SECRET": SESSION_KEY},
            self.dir,
            self.db,
            *args,
            port=self.port,
        )
        self.processes.append(self.dashboard)

    def stop_dashboard(self) -> int:
        """Stop the dashboard as an operator would (SIGTERM); its exit status."""
        assert self.dashboard is not None
        self.dashboard.send(signal.SIGTERM)
        return self.dashboard.wait_exit(15)

    def on_broker(self, use: Callable[[Transport], Awaitable[T]]) -> T:
        """``use(transport)`` on a fresh connection, on a loop of another thread (the
        browser's driver holds this one)."""

        async def run() -> T:
            transport = self.app.create_transport()
            await transport.connect()
            try:
                return await use(transport)
            finally:
                await transport.close()

        found: T = amqp_broker.in_thread(run)
        return found

    def dead_letters(self) -> list[DeadLetter]:
        """The default queue's dead letters, as the broker has them."""
        return self.on_broker(lambda t: t.dead_letters(self.broker.queue, 1000))

    def logs(self) -> str:
        """Everything every process printed so far."""
        return "\n".join(process.output() for process in self.processes)

    def close(self) -> None:
        try:
            for process in self.processes:
                process.send(signal.SIGTERM)
            for process in self.processes:
                process.stop()
        finally:
            self.app.close()
