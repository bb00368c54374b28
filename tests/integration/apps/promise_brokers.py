"""The brokers of the promise tests (``tests/integration/test_promise_*.py``), one namespace each.

A :class:`Namespace` is what one test owns on one broker, so that tests running at once (pytest
-xdist) never see each other's messages: a key prefix on the shared Redis, a queue of its own in
the RabbitMQ vhost of this xdist worker (:mod:`amqp_broker`), or a SQLite file in the test's tmp
dir. Results go to the same Redis prefix, or to a SQLite file for the other brokers. ``close()``
deletes what the test made.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import amqp_broker
from celeriac import Celeriac
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/0"
KINDS = ["sqlite", "redis", "amqp"]
_vhost_ready: list[str] = []  # rabbitmqctl costs a second or two a call: once per process


def vhost_answers() -> bool:
    """Whether the tests' vhost exists and lets guest in (a connection costs a few ms,
    ``rabbitmqctl`` a second or two)."""
    import aio_pika
    from aiormq.exceptions import AMQPError

    async def connect() -> bool:
        try:
            connection = await aio_pika.connect(amqp_broker.URL, timeout=5)
        except (AMQPError, OSError):
            return False
        await connection.close()
        return True

    answered: bool = amqp_broker.in_thread(connect)
    return answered


class Namespace:
    """One test's place on one broker, and the apps it made there."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tag = f"promise-{uuid.uuid4().hex[:10]}"
        #: The queue the test's apps send to and their workers consume.
        self.queue = self.tag
        results = f"sqlite:///{tmp_path / f'{self.tag}-results.db'}"
        self.transport_options: dict[str, Any] = {}
        if kind == "redis":
            require_service("Redis", 6379)
            self.broker = self.backend = REDIS_URL
            self.transport_options = {"key_prefix": f"{self.tag}:"}
        elif kind == "amqp":
            require_service("RabbitMQ", 5672)
            if amqp_broker.VHOST not in _vhost_ready:
                if not vhost_answers():
                    amqp_broker.ensure_vhost()
                _vhost_ready.append(amqp_broker.VHOST)
            self.broker, self.backend = amqp_broker.URL, results
        else:
            self.broker = f"sqlite:///{tmp_path / f'{self.tag}.db'}"
            self.backend = results
        self.apps: list[Celeriac] = []

    def app(self, name: str = "promise", **settings: Any) -> Celeriac:
        """An app in this namespace; ``broker_transport_options`` given are added to its own."""
        options = {**self.transport_options, **settings.pop("broker_transport_options", {})}
        made = Celeriac(
            name,
            broker=self.broker,
            backend=self.backend,
            broker_transport_options=options,
            result_backend_transport_options=dict(self.transport_options),
            task_default_queue=self.queue,
            **settings,
        )
        self.apps.append(made)
        return made

    def close(self) -> None:
        try:
            for made in self.apps:
                made.close()
        finally:
            if self.kind == "redis":
                delete_redis_keys(REDIS_URL, self.tag)
            elif self.kind == "amqp":
                amqp_broker.delete([self.queue, f"{self.queue}.dlq"], [self.queue])
