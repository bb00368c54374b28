"""The app of ``bench/events.py``: one task that INCRs a counter, on Redis under a key prefix.

Imported by the worker (``-A events_app``) with ``BENCH_EVENTS_URL``, ``BENCH_EVENTS_PREFIX``
and ``BENCH_EVENTS_COUNTER`` set by the driver; ``BENCH_EVENTS_KEY`` and ``BENCH_EVENTS_TRUST``
(a private key and the public keys trusted) turn signing on; ``BENCH_EVENTS_BEAT`` (a number
of entries) gives the app a beat schedule of that many entries firing every second, to a queue
the worker does not consume (the ``beat`` arm runs the worker with ``-B``).
"""

from __future__ import annotations

import os

import redis

from celeriac import Celeriac

URL = os.environ.get("BENCH_EVENTS_URL", "redis://127.0.0.1:6379/2")
PREFIX = os.environ.get("BENCH_EVENTS_PREFIX", "bench-events:")
COUNTER = os.environ.get("BENCH_EVENTS_COUNTER", "bench-events:counter")

SIGNING = {
    "security_key": os.environ.get("BENCH_EVENTS_KEY"),
    "security_cert_store": os.environ.get("BENCH_EVENTS_TRUST"),
}
BEAT_ENTRIES = int(os.environ.get("BENCH_EVENTS_BEAT", "0"))

app = Celeriac(
    "bench_events",
    broker=URL,
    backend="disabled",
    broker_transport_options={"key_prefix": PREFIX},
    **{name: value for name, value in SIGNING.items() if value},
)
app.conf.beat_schedule = {
    f"tick-{n}": {"task": "bench.tick", "schedule": 1.0, "options": {"queue": "bench-ticks"}}
    for n in range(BEAT_ENTRIES)
}

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
