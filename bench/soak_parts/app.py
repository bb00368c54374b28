"""The soak's worker app: one task that INCRs the done counter and stores its result.

Imported by the worker (``celeriac -A soak_parts.app worker``) with ``SOAK_URL``, ``SOAK_PREFIX``
and ``SOAK_RESULT_EXPIRES`` set by ``bench/soak.py``. The broker and the result backend share the
run's key prefix, so its keys (queue, results, counter) are all found, counted and deleted by it.
Results are stored (not ``ignore_result``) with a short ``result_expires``: a soak must also show
that result keys go away at the rate they come, or Redis grows by one key per task.
"""

from __future__ import annotations

import os

import redis

from celeriac import Celeriac

URL = os.environ.get("SOAK_URL", "redis://127.0.0.1:6379/6")
PREFIX = os.environ.get("SOAK_PREFIX", "soak:")
COUNTER = f"{PREFIX}done"
RESULT_EXPIRES = float(os.environ.get("SOAK_RESULT_EXPIRES", "30"))

app = Celeriac(
    "soak",
    broker=URL,
    backend=URL,
    result_expires=RESULT_EXPIRES,
    broker_transport_options={"key_prefix": PREFIX},
    result_backend_transport_options={"key_prefix": PREFIX},
)

_client: redis.Redis | None = None
_pid = 0


def client() -> redis.Redis:
    """One client per process: a prefork child makes its own after the fork."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client, _pid = redis.Redis.from_url(URL), os.getpid()
    return _client


@app.task(name="soak.noop")
def noop() -> None:
    """Count itself done; the result (None) is stored and expires after ``result_expires``."""
    client().incr(COUNTER)
