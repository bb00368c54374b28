"""The oracle's task code, written once and declared on a Celery app and on a celeriac app.

The bodies mirror ``tests/integration/apps/canvas_tasks.py`` so that a difference in a scenario is
a difference of the canvas, not of the tasks. Only ``app.task`` and ``chain`` come from the system
under test; counters go straight to Redis (both venvs have redis-py) so that the driver reads
them the same way for both. ``Boom`` lives here, in a module both the worker and the client
import under the same name, so each system can rebuild it by type when ``get()`` re-raises it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import redis

REDIS_URL = os.environ.get("ORACLE_REDIS_URL", "redis://127.0.0.1:6379/12")
PREFIX = "oracle:"

_client: redis.Redis | None = None


class Boom(Exception):
    """The error the failing tasks raise."""


def client() -> redis.Redis:
    """One connection per process, opened on first use (never at import)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    return _client


def incr(key: str) -> int:
    return int(client().incr(PREFIX + key))


def note(key: str, value: Any) -> None:
    """Append ``value`` (as text) to a list the scenario reads back with :func:`notes`."""
    client().rpush(PREFIX + "notes:" + key, str(value))


def runs(key: str) -> int:
    value = client().get(PREFIX + key)
    return int(value) if value is not None else 0


def notes(key: str) -> list[str]:
    return list(client().lrange(PREFIX + "notes:" + key, 0, -1))


@dataclass
class Tasks:
    """The declared tasks, one attribute each, whatever the system."""

    add: Any
    mul: Any
    sub: Any
    tsum: Any
    fail: Any
    flaky: Any
    counted_sum: Any
    aadd: Any
    whoami: Any
    replacer: Any
    ident: Any
    on_error: Any
    on_error_doc: Any
    record: Any


def declare(app: Any, chain: Any) -> Tasks:
    """Declare every task on ``app``; ``chain`` is that system's chain (for ``replacer``)."""

    @app.task(name="oracle.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="oracle.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="oracle.sub")
    def sub(x: int, y: int) -> int:
        return x - y

    @app.task(name="oracle.tsum")
    def tsum(values: list[Any]) -> Any:
        if values and isinstance(values[0], list):
            return [sum(v) for v in values]
        return sum(values)

    @app.task(name="oracle.fail")
    def fail(*args: Any) -> None:
        raise Boom(f"boom {args!r}")

    @app.task(name="oracle.flaky", bind=True, max_retries=3)
    def flaky(self: Any, x: int, tag: str) -> int:
        incr(f"runs:{tag}:{x}")
        if self.request.retries == 0:
            self.retry(countdown=0)
        return x

    @app.task(name="oracle.counted_sum")
    def counted_sum(values: list[int], tag: str) -> int:
        incr(f"runs:{tag}")
        return sum(values)

    @app.task(name="oracle.aadd")
    async def aadd(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    @app.task(name="oracle.whoami", bind=True)
    def whoami(self: Any, *args: Any) -> dict[str, Any]:
        request = self.request
        return {"id": request.id, "root_id": request.root_id, "parent_id": request.parent_id}

    @app.task(name="oracle.replacer", bind=True)
    def replacer(self: Any, x: int) -> None:
        self.replace(chain(add.s(x, 1), mul.s(2)))

    @app.task(name="oracle.ident")
    def ident(x: Any) -> Any:
        return x

    @app.task(name="oracle.on_error")
    def on_error(task_id: str, tag: str) -> None:
        incr(f"runs:{tag}")
        note(tag, task_id)

    @app.task(name="oracle.on_error_doc")
    def on_error_doc(request: Any, exc: BaseException, traceback: Any) -> None:
        # Celery's documented errback form: (request, exc, traceback), called inline.
        note("doc-errback", f"{getattr(request, 'id', request)}|{type(exc).__name__}|{exc}")

    @app.task(name="oracle.record")
    def record(value: Any, tag: str) -> Any:
        note(tag, value)
        return value

    return Tasks(
        add,
        mul,
        sub,
        tsum,
        fail,
        flaky,
        counted_sum,
        aadd,
        whoami,
        replacer,
        ident,
        on_error,
        on_error_doc,
        record,
    )
