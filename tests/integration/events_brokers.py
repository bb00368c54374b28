"""The brokers the events integration tests run on, each with a place of the test's own.

:func:`open_broker` gives a :class:`Broker` for ``sqlite`` (a file in the test's tmp dir),
``redis`` (a key prefix of its own on a shared database, deleted after) or ``amqp`` (a default
queue of its own in the tests' vhost, deleted after); each test module's ``broker`` fixture is
one line over it.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.events_tasks import BROKER_ENV, OPTIONS_ENV, QUEUE_ENV, build_app
from worker_harness import child_env

import amqp_broker
from celeriac import Celeriac
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/13"


@dataclass
class Broker:
    """One broker as the tests use it: its URL, options, a queue of the test's own."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    queue: str = field(default_factory=lambda: f"ev-{uuid.uuid4().hex[:8]}")
    #: The SQLite file (sqlite only).
    path: Path | None = None

    def app(self) -> Celeriac:
        return build_app(self.url, self.options, self.queue)

    def env(self) -> dict[str, str]:
        return child_env(
            {
                BROKER_ENV: self.url,
                OPTIONS_ENV: json.dumps(self.options),
                QUEUE_ENV: self.queue,
            }
        )

    @property
    def prefix(self) -> str:
        """The Redis key prefix (redis only)."""
        return str(self.options["key_prefix"])


@contextlib.contextmanager
def open_broker(name: str, tmp_path: Path) -> Iterator[Broker]:
    if name == "sqlite":
        path = tmp_path / "broker.db"
        yield Broker(name, f"sqlite:///{path}", path=path)
        return
    if name == "redis":
        require_service("Redis", 6379)
        prefix = f"itest-ev-{uuid.uuid4().hex[:8]}:"
        try:
            yield Broker(name, REDIS_URL, {"key_prefix": prefix})
        finally:
            delete_redis_keys(REDIS_URL, prefix)
        return
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    found = Broker(name, amqp_broker.URL)
    try:
        yield found
    finally:
        amqp_broker.delete(queues=[found.queue, f"{found.queue}.dlq"])
