"""Tasks of the canvas scenario suite, declared on any app (memory, SQLite or Redis).

The same task code runs every scenario on every backend; ``count`` records each run in the
backend's own atomic counter, so a test can prove that a chord body ran exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from celeriac import Celeriac, Retry, Task, chain

#: Gates the in-process tests open to let a ``gate`` task finish (the workers are threads here).
GATES: dict[str, threading.Event] = {}


class Boom(Exception):
    """The error the failing tasks raise (a test module's own type: rebuilt by type)."""


@dataclass
class Tasks:
    add: Task[Any, Any]
    mul: Task[Any, Any]
    tsum: Task[Any, Any]
    fail: Task[Any, Any]
    flaky: Task[Any, Any]
    counted_sum: Task[Any, Any]
    aadd: Task[Any, Any]
    whoami: Task[Any, Any]
    replacer: Task[Any, Any]
    ident: Task[Any, Any]
    on_error: Task[Any, Any]
    counted_add: Task[Any, Any]
    gate: Task[Any, Any]
    handler: Task[Any, Any]
    retry_headers: Task[Any, Any]
    bare_retry: Task[Any, Any]


def runs(app: Celeriac, tag: str) -> int:
    """How many times ``count``-style tasks recorded ``tag`` (0 when never)."""
    backend = app.backend
    assert backend is not None
    return backend.incr(f"runs:{tag}", 0)


def declare(app: Celeriac) -> Tasks:
    backend = app.backend
    assert backend is not None

    @app.task(name="canvas.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="canvas.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="canvas.tsum")
    def tsum(values: list[Any]) -> Any:
        if values and isinstance(values[0], list):
            return [sum(v) for v in values]
        return sum(values)

    @app.task(name="canvas.fail")
    def fail(*args: Any) -> None:
        raise Boom(f"boom {args!r}")

    @app.task(name="canvas.flaky", bind=True, max_retries=3)
    def flaky(self: Task[Any, Any], x: int, tag: str) -> int:
        backend.incr(f"runs:{tag}:{x}")
        if self.request.retries == 0:
            self.retry(countdown=0)
        return x

    @app.task(name="canvas.counted_sum")
    def counted_sum(values: list[int], tag: str) -> int:
        backend.incr(f"runs:{tag}")
        return sum(values)

    @app.task(name="canvas.aadd")
    async def aadd(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    @app.task(name="canvas.whoami", bind=True)
    def whoami(self: Task[Any, Any], *args: Any) -> dict[str, Any]:
        request = self.request
        return {"id": request.id, "root_id": request.root_id, "parent_id": request.parent_id}

    @app.task(name="canvas.replacer", bind=True)
    def replacer(self: Task[Any, Any], x: int) -> None:
        self.replace(chain(add.s(x, 1), mul.s(2)))

    @app.task(name="canvas.ident")
    def ident(x: Any) -> Any:
        return x

    @app.task(name="canvas.on_error")
    def on_error(task_id: str, tag: str) -> None:
        # the per-id count first: a test that waits for the plain count then reads this one
        backend.incr(f"runs:{tag}:{task_id}")
        backend.incr(f"runs:{tag}")

    @app.task(name="canvas.counted_add")
    def counted_add(x: int, y: int, tag: str) -> int:
        backend.incr(f"runs:{tag}")
        return x + y

    @app.task(name="canvas.gate")
    def gate(value: int, key: str) -> int:
        if not GATES.setdefault(key, threading.Event()).wait(30):
            raise TimeoutError(f"gate {key} was never opened")
        return value

    @app.task(name="canvas.handler")
    def handler(request: Any, exc: BaseException, traceback: str | None, tag: str) -> None:
        """Celery's documented errback form: called in the worker, not sent."""
        backend.incr(f"runs:{tag}:{request.id}:{type(exc).__name__}")

    @app.task(name="canvas.retry_headers", bind=True, max_retries=2)
    def retry_headers(self: Task[Any, Any]) -> Any:
        if self.request.retries == 0:
            self.retry(countdown=0, headers={"tenant": "acme"})
        return self.request.headers.get("tenant")

    @app.task(name="canvas.bare_retry", bind=True)
    def bare_retry(self: Task[Any, Any]) -> None:
        raise Retry("not now")  # no new attempt is sent: the state stays RETRY

    return Tasks(
        add,
        mul,
        tsum,
        fail,
        flaky,
        counted_sum,
        aadd,
        whoami,
        replacer,
        ident,
        on_error,
        counted_add,
        gate,
        handler,
        retry_headers,
        bare_retry,
    )
