"""Both sides of the kombu-layout interop tests: a celeriac app on Redis in kombu's layout, and
the source of a Celery 5.7 app with the same tasks, on the same Redis database.

The celeriac app is built from the environment when a worker imports this module:
``ITEST_KL_QUEUE`` (the queue, one per test), ``ITEST_KL_PREFIX`` (kombu's ``global_keyprefix``
and the results' prefix, one per test) and ``ITEST_KL_VT`` (the visibility timeout, in seconds).
:data:`CELERY_APP` is the Celery module, written into the test's directory and run by
``celery -A``. Every task run is recorded in the Redis list ``<prefix>runs`` as
``<task id>|<celery or celeriac>``, so a test counts runs per task id across processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from celeriac import Celeriac, Task

QUEUE_ENV = "ITEST_KL_QUEUE"
PREFIX_ENV = "ITEST_KL_PREFIX"
VT_ENV = "ITEST_KL_VT"
BROKER = "redis://127.0.0.1:6379/7"

_client: list[redis.Redis] = []


def _redis() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(BROKER))
    return _client[0]


def record(prefix: str, what: str, task_id: str | None, who: str) -> None:
    """Append ``<task id>|<who>`` to ``<prefix><what>`` (one client per process)."""
    _redis().rpush(f"{prefix}{what}", f"{task_id}|{who}")


def hold(prefix: str) -> None:
    """Wait while the key ``<prefix>hold`` exists (a test deletes it to let slow tasks end),
    at most a minute."""
    deadline = time.monotonic() + 60
    while _redis().exists(f"{prefix}hold") and time.monotonic() < deadline:
        time.sleep(0.02)


def build_app(queue: str, prefix: str, visibility_timeout: float = 3600.0) -> Celeriac:
    app = Celeriac(
        "kombu_layout_itest",
        broker=BROKER,
        backend=BROKER,
        broker_transport_options={
            "layout": "kombu",
            "global_keyprefix": prefix,
            "visibility_timeout": visibility_timeout,
        },
        result_backend_transport_options={"layout": "celery", "global_keyprefix": prefix},
        result_extended=True,
        task_default_queue=queue,
        worker_prefetch_multiplier=4,
    )

    @app.task(name="kl.describe", bind=True)
    def describe(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """What arrived and how: the caller checks each."""
        request = self.request
        record(prefix, "runs", request.id, "celeriac")
        return {
            "args": list(args),
            "kwargs": kwargs,
            "retries": request.retries,
            "eta": request.eta,
            "priority": (request.delivery_info or {}).get("priority"),
            "at": time.time(),
            "by": "celeriac",
        }

    @app.task(name="kl.record", bind=True)
    def record_run(self: Task[Any, Any], n: int) -> int:
        record(prefix, "runs", self.request.id, "celeriac")
        return n

    @app.task(name="kl.slow", bind=True, acks_late=True)
    def slow(self: Task[Any, Any]) -> str:
        """Runs while ``<prefix>hold`` exists; acked when it ends (a worker killed meanwhile
        leaves it unacked)."""
        record(prefix, "started", self.request.id, "celeriac")
        hold(prefix)
        record(prefix, "runs", self.request.id, "celeriac")
        return "celeriac"

    @app.task(name="kl.flaky", bind=True)
    def flaky(self: Task[Any, Any]) -> dict[str, Any]:
        """Retries once, a second later; then says how many retries it took."""
        record(prefix, "runs", self.request.id, "celeriac")
        if self.request.retries == 0:
            raise self.retry(countdown=1)
        return {"retries": self.request.retries, "by": "celeriac"}

    @app.task(name="kl.boom")
    def boom(text: str) -> None:
        raise ValueError(text)

    return app


#: The Celery side: format with broker, queue, prefix and visibility timeout.
CELERY_APP = """
import time
import redis
from celery import Celery

app = Celery("kl_celery_side", broker={broker!r}, backend={broker!r})
app.conf.task_default_queue = {queue!r}
app.conf.broker_transport_options = {{
    "global_keyprefix": {prefix!r},
    "visibility_timeout": {vt!r},
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}}
app.conf.result_backend_transport_options = {{"global_keyprefix": {prefix!r}}}
app.conf.result_extended = True
app.conf.worker_prefetch_multiplier = 4
_client = redis.Redis.from_url({broker!r})


def record(what, task_id):
    _client.rpush({prefix!r} + what, str(task_id) + "|celery")


@app.task(name="kl.describe", bind=True)
def describe(self, *args, **kwargs):
    record("runs", self.request.id)
    info = self.request.delivery_info or {{}}
    return {{"args": list(args), "kwargs": kwargs, "retries": self.request.retries,
            "eta": self.request.eta, "priority": info.get("priority"), "at": time.time(),
            "by": "celery"}}


@app.task(name="kl.record", bind=True)
def record_run(self, n):
    record("runs", self.request.id)
    return n


@app.task(name="kl.slow", bind=True, acks_late=True)
def slow(self):
    record("started", self.request.id)
    deadline = time.monotonic() + 60
    while _client.exists({prefix!r} + "hold") and time.monotonic() < deadline:
        time.sleep(0.02)
    record("runs", self.request.id)
    return "celery"


@app.task(name="kl.flaky", bind=True)
def flaky(self):
    record("runs", self.request.id)
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    return {{"retries": self.request.retries, "by": "celery"}}


@app.task(name="kl.boom")
def boom(text):
    raise ValueError(text)
"""


if QUEUE_ENV in os.environ:
    app = build_app(
        os.environ[QUEUE_ENV], os.environ[PREFIX_ENV], float(os.environ.get(VT_ENV, "3600"))
    )
