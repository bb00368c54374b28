"""What the tasks, hooks and signal receivers of the project report to the test process.

A hook or a signal receiver runs in the worker (or its pool's child process), where a test cannot
see it; so each reports what it saw as a JSON record pushed on a Redis list named after the task
id it concerns (or ``"worker"``), under the run's key prefix. The test pops the list with a
blocking ``BLPOP``: it waits on the record itself, never on a sleep.

Tasks that must be caught while they run (``STARTED``, ``PROGRESS``) block on a "go" list the
test pushes to once it has seen what it wanted; tasks that fail a given number of times count
their attempts with ``INCR``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import redis

from proj.celeryconfig import PREFIX, REDIS_URL

_local = threading.local()


def client() -> redis.Redis:
    """One connection per thread of this process (pool threads and children each get theirs)."""
    conn: redis.Redis | None = getattr(_local, "client", None)
    if conn is None:
        # blocking pops wait up to their own timeout, longer than redis-py's 5 s default
        conn = _local.client = redis.Redis.from_url(REDIS_URL, socket_timeout=60)
    return conn


def events_key(key: str) -> str:
    return f"{PREFIX}parity-events:{key}"


def record(key: str, kind: str, **data: Any) -> None:
    """Report ``kind`` (a hook's or signal's name) with ``data`` about ``key`` (a task id)."""
    client().rpush(events_key(key), json.dumps({"kind": kind, **data}, default=repr))


def wait_go(key: str, timeout: float = 20.0) -> bool:
    """Block until the test says go for ``key``; False if it never does within ``timeout``."""
    return client().blpop([f"{PREFIX}parity-go:{key}"], timeout=timeout) is not None


def go(key: str) -> None:
    client().rpush(f"{PREFIX}parity-go:{key}", "go")


def attempt(key: str) -> int:
    """The number of this attempt at ``key`` (1, 2, ...), counted across processes."""
    return int(client().incr(f"{PREFIX}parity-attempts:{key}"))


def attempts(key: str) -> int:
    """How many attempts at ``key`` were counted so far."""
    return int(client().get(f"{PREFIX}parity-attempts:{key}") or 0)
