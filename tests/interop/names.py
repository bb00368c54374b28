"""Where one session's fleet lives, shared by the test process and every worker it starts.

The test process picks a tag; the broker (a RabbitMQ vhost of the session's own, so Celery's
default names, ``celery.pidbox`` and ``celeryev`` included, meet nobody else's), the Redis key
prefix of the results and the queues all derive from it. Workers read it from the environment
(:func:`Names.from_env`), so both kinds of worker are built from the same facts.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

TAG_ENV = "INTEROP_TAG"
RUNS_ENV = "INTEROP_RUNS"
RESULTS = "redis://127.0.0.1:6379/10"
#: The priority levels of the priority queue, as Celery's documentation declares it.
PRIORITY_LEVELS = 10


@dataclass(frozen=True)
class Names:
    tag: str
    runs: str

    @classmethod
    def from_env(cls) -> Names:
        return cls(os.environ[TAG_ENV], os.environ[RUNS_ENV])

    def env(self) -> dict[str, str]:
        return {TAG_ENV: self.tag, RUNS_ENV: self.runs}

    @property
    def vhost(self) -> str:
        return f"celeriac-interop-{self.tag}"

    @property
    def broker(self) -> str:
        """The same URL for both kinds of app (``amqp://``: Celery's py-amqp, celeriac's own)."""
        return f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"

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
