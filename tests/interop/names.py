"""Where one session's fleet lives, shared by the test process and every worker it starts.

The test process picks a broker and a tag; the place on the broker and the Redis key prefix of
the results derive from the tag, so that Celery's default names (``celery.pidbox``,
``celeryev``, the queues) meet nobody else's: on RabbitMQ a vhost of the session's own, on
Redis kombu's ``global_keyprefix`` (on every key and channel, in kombu's layout). Workers read
it from the environment (:func:`Names.from_env`), so both kinds of worker are built from the
same facts.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

TAG_ENV = "INTEROP_TAG"
RUNS_ENV = "INTEROP_RUNS"
BROKER_ENV = "INTEROP_BROKER"
RESULTS = "redis://127.0.0.1:6379/10"
#: The Redis broker: the results' database (every key under the session's prefix).
REDIS_BROKER = RESULTS
#: The priority levels of the priority queue, as Celery's documentation declares it.
PRIORITY_LEVELS = 10


@dataclass(frozen=True)
class Names:
    tag: str
    runs: str
    #: ``amqp`` or ``redis``.
    kind: str = "amqp"

    @classmethod
    def from_env(cls) -> Names:
        return cls(os.environ[TAG_ENV], os.environ[RUNS_ENV], os.environ[BROKER_ENV])

    def env(self) -> dict[str, str]:
        return {TAG_ENV: self.tag, RUNS_ENV: self.runs, BROKER_ENV: self.kind}

    @property
    def vhost(self) -> str:
        """The RabbitMQ vhost (``amqp`` only)."""
        return f"celeriac-interop-{self.tag}"

    @property
    def broker(self) -> str:
        """The same URL for both kinds of app."""
        if self.kind == "redis":
            return REDIS_BROKER
        return f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"

    def celery_transport_options(self) -> dict[str, Any]:
        """Celery's ``broker_transport_options``: the key prefix on Redis."""
        return {"global_keyprefix": self.prefix} if self.kind == "redis" else {}

    def celeriac_transport_options(self) -> dict[str, Any]:
        """celeriac's, for a fleet shared with Celery: kombu's layout and prefix on Redis;
        queues declared as Celery declares them on RabbitMQ (no priorities unless the queue
        asks, as the priority queue does)."""
        if self.kind == "redis":
            # key_prefix too: celeriac's revokes (control/revokes_redis) are named by it alone,
            # without global_keyprefix, and would be shared by every fleet of the database
            return {
                "layout": "kombu",
                "global_keyprefix": self.prefix,
                "key_prefix": f"{self.prefix}celeriac:",
            }
        return {"max_priority": 0}

    @property
    def priorities(self) -> tuple[int, int]:
        """``(urgent, lax)``: served first, served last. kombu's Redis serves the lower number
        first (0 before 9), AMQP the higher."""
        return (0, 9) if self.kind == "redis" else (9, 1)

    @property
    def prefix(self) -> str:
        """The Redis key prefix of every result of the session."""
        return f"celeriac-interop-{self.tag}:"

    @property
    def results(self) -> str:
        return RESULTS

    @property
    def celeriac_node(self) -> str:
        """The session's celeriac worker."""
        return f"celeriac@{self.tag}"

    @property
    def celery_node(self) -> str:
        """The session's Celery worker."""
        return f"celery@{self.tag}"

    # -- queues ---------------------------------------------------------------------------
    @property
    def celeriac_queue(self) -> str:
        """Consumed by the celeriac worker only."""
        return "to-celeriac"

    @property
    def celery_queue(self) -> str:
        """Consumed by the Celery worker only."""
        return "to-celery"

    @property
    def mixed_queue(self) -> str:
        """Consumed by both at once."""
        return "mixed"

    @property
    def priority_queue(self) -> str:
        """Declared with ``x-max-priority`` by both sides alike."""
        return "by-priority"

    def task_queues(self) -> list[Any]:
        """kombu's queues, as Celery's routing guide lists them (each with its direct exchange
        and routing key named after it); celeriac reads the same objects."""
        # ``from kombu import Exchange, Queue`` in a Celery project; typed loosely here because
        # kombu's own annotations are partial (mypy strict would flag every call)
        kombu: Any = importlib.import_module("kombu")
        Exchange, Queue = kombu.Exchange, kombu.Queue
        plain = [self.celeriac_queue, self.celery_queue, self.mixed_queue]
        queues = [Queue(name, Exchange(name), routing_key=name) for name in plain]
        prio = self.priority_queue
        arguments = {"x-max-priority": PRIORITY_LEVELS}
        return [*queues, Queue(prio, Exchange(prio), routing_key=prio, queue_arguments=arguments)]
