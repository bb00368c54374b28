"""Tasks for the routing tests on Redis: settings written for Celery, with kombu's objects.

The worker imports this module (``-A apps.routing_tasks``) and builds its app from the
environment: ``ITEST_REDIS_URL`` (broker and results), ``ITEST_REDIS_PREFIX`` (key prefix, one per
test), ``ITEST_RUNS_FILE`` (each run appends ``<pid>:<task>:<tag>``, so a test sees which worker
ran what) and ``ITEST_KOMBU`` (``as-is``: ``task_queues`` holds kombu's objects as a Celery
project's settings do; ``converted``: the same objects through ``celeriac.routing.as_queue``).

The queues: ``celery``; ``prio``, a kombu queue on its own direct exchange with
``queue_arguments={"x-max-priority": 3}``; ``rt-bcast``, a Broadcast (kombu's in ``as-is``,
celeriac's otherwise), so every worker has a queue of its own on the fanout exchange ``rt-bcast``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from celeriac import Celeriac
from celeriac.routing import Broadcast, as_queue

# ``from kombu import Exchange, Queue`` in a Celery project; typed loosely here because kombu's
# own annotations are partial (mypy strict would flag every call)
kombu: Any = importlib.import_module("kombu")
kombu_common: Any = importlib.import_module("kombu.common")

URL_ENV = "ITEST_REDIS_URL"
PREFIX_ENV = "ITEST_REDIS_PREFIX"
RUNS_ENV = "ITEST_RUNS_FILE"
KOMBU_ENV = "ITEST_KOMBU"

PRIORITY_QUEUE = "prio"
BROADCAST = "rt-bcast"
ROUTES = {
    "rt.broadcast": {"queue": BROADCAST},
    "rt.prio": {"queue": PRIORITY_QUEUE},
}


def task_queues(mode: str) -> list[Any]:
    """``task_queues`` as a Celery project writes it (``as-is``) or converted."""
    kombu_queues = [
        kombu.Queue("celery"),
        kombu.Queue(
            PRIORITY_QUEUE,
            kombu.Exchange(PRIORITY_QUEUE),
            routing_key=PRIORITY_QUEUE,
            queue_arguments={"x-max-priority": 3},
        ),
    ]
    if mode == "as-is":
        return [*kombu_queues, kombu_common.Broadcast(BROADCAST)]
    return [*(as_queue(q) for q in kombu_queues), Broadcast(BROADCAST)]


def build_app(url: str, prefix: str, runs_file: str, mode: str) -> Celeriac:
    app = Celeriac(
        "routing_itest",
        broker=url,
        backend=url,
        broker_transport_options={"key_prefix": prefix},
        result_backend_transport_options={"key_prefix": prefix},
        task_queues=task_queues(mode),
        task_routes=ROUTES,
    )

    def record(kind: str, tag: str) -> str:
        line = f"{os.getpid()}:{kind}:{tag}\n"
        fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return tag

    @app.task(name="rt.broadcast")
    def broadcast(tag: str) -> str:
        return record("broadcast", tag)

    @app.task(name="rt.prio")
    def prio(tag: str) -> str:
        return record("prio", tag)

    return app


if URL_ENV in os.environ:
    app = build_app(
        os.environ[URL_ENV],
        os.environ[PREFIX_ENV],
        os.environ[RUNS_ENV],
        os.environ.get(KOMBU_ENV, "converted"),
    )
