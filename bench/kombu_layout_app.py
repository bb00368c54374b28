"""The app of ``bench/kombu_layout.py``: one task that INCRs a counter, on Redis in the layout
the driver names.

Imported by the worker (``-A kombu_layout_app``) with ``BENCH_KL_URL``, ``BENCH_KL_PREFIX``,
``BENCH_KL_COUNTER`` and ``BENCH_KL_LAYOUT`` (``celeriac`` or ``kombu``) set by the driver.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from celeriac import Celeriac

URL = os.environ.get("BENCH_KL_URL", "redis://127.0.0.1:6379/2")
PREFIX = os.environ.get("BENCH_KL_PREFIX", "bench-kl:")
COUNTER = os.environ.get("BENCH_KL_COUNTER", "bench-kl:counter")
LAYOUT = os.environ.get("BENCH_KL_LAYOUT", "celeriac")


def options(layout: str, prefix: str) -> dict[str, Any]:
    """The broker options of a layout under ``prefix`` (kombu's prefix is global_keyprefix)."""
    if layout == "kombu":
        return {"layout": "kombu", "global_keyprefix": prefix}
    return {"key_prefix": prefix}


app = Celeriac(
    "bench_kl", broker=URL, backend="disabled", broker_transport_options=options(LAYOUT, PREFIX)
)

_client: redis.Redis | None = None
_pid = 0


def client() -> redis.Redis:
    """One client per process (a prefork child makes its own after the fork)."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client, _pid = redis.Redis.from_url(URL), os.getpid()
    return _client


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    client().incr(COUNTER)
