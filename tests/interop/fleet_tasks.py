"""The fleet's tasks, written once as a Celery user writes them and registered on both kinds of
app: ``register(Celery(...), "celery", runs)`` and ``register(Celeriac(...), "celeriac", runs)``
give the same names, arguments and results, which is the migration's premise.

Every run appends one JSON line to a file of its process in the ``runs`` directory (``kind``,
``id``, ``name``, ``retries``, ``note``, ``t``): where each task ran, how often, and in what order
(:mod:`.runs` reads them). A line is one ``write`` under ``O_APPEND`` to a file no other process
writes, so lines never interleave and a reader sees whole lines or a partial last one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

#: How long ``fleet.block`` waits for its release file at most (a test that forgets to release
#: still ends).
BLOCK_LIMIT = 30.0


def record(runs: str, kind: str, request: Any, name: str, note: Any = None) -> None:
    """Append this run to the process's own file."""
    line = {
        "kind": kind,
        "id": request.id,
        "name": name,
        "retries": request.retries,
        "note": note,
        "t": time.time(),
    }
    path = Path(runs, f"{kind}-{os.getpid()}.jsonl")
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def register(app: Any, kind: str, runs: str) -> None:
    """Declare the fleet's tasks on ``app`` (a Celery or a celeriac app), as ``kind``."""
    # Celery's decorator is untyped: seen as one that keeps each function's type
    declare = cast(Callable[..., Callable[[Callable[..., Any]], Any]], app.task)
    # Celery shares every decorated task with the apps made later (one per broker here)
    private = {"shared": False} if kind == "celery" else {}

    def task(**options: Any) -> Callable[[Callable[..., Any]], Any]:
        return declare(**options, **private)

    @task(name="fleet.add", bind=True)
    def add(self: Any, x: int, y: int) -> int:
        record(runs, kind, self.request, "fleet.add", [x, y])
        return x + y

    @task(name="fleet.describe", bind=True)
    def describe(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """What arrived and how: the caller checks arguments, priority, eta and timing."""
        request = self.request
        record(runs, kind, request, "fleet.describe")
        return {
            "args": list(args),
            "kwargs": kwargs,
            "by": kind,
            "ran_at": time.time(),
            "eta": request.eta,
            "priority": (request.delivery_info or {}).get("priority"),
        }

    @task(name="fleet.flaky", bind=True, max_retries=5)
    def flaky(self: Any, times: int) -> dict[str, Any]:
        """Fails ``times`` times, retrying each time, then succeeds."""
        record(runs, kind, self.request, "fleet.flaky")
        if self.request.retries < times:
            raise self.retry(countdown=0.05)
        return {"retries": self.request.retries, "by": kind}

    @task(name="fleet.give_up", bind=True, max_retries=1)
    def give_up(self: Any, text: str) -> None:
        """Retries once, then its ``exc`` is raised: the caller's ``get()`` raises it."""
        record(runs, kind, self.request, "fleet.give_up")
        raise self.retry(exc=KeyError(text), countdown=0.05)

    @task(name="fleet.fail", bind=True)
    def fail(self: Any, text: str) -> None:
        record(runs, kind, self.request, "fleet.fail")
        raise ValueError(text, 42)

    @task(name="fleet.on_error", bind=True)
    def on_error(self: Any, failed_id: str) -> str:
        """An errback in Celery's one-argument form: it gets the failed task's id."""
        record(runs, kind, self.request, "fleet.on_error", failed_id)
        return failed_id

    @task(name="fleet.tick", bind=True)
    def tick(self: Any, n: int) -> int:
        """The drain's task: nothing but its record."""
        record(runs, kind, self.request, "fleet.tick", n)
        return n

    @task(name="fleet.paced", bind=True)
    def paced(self: Any) -> float:
        """Rate-limited at run time by remote control (no other test uses it)."""
        record(runs, kind, self.request, "fleet.paced")
        return time.time()

    @task(name="fleet.block", bind=True)
    def block(self: Any, release: str) -> str:
        """Holds its slot until ``release`` exists (bounded): a worker made busy on purpose."""
        record(runs, kind, self.request, "fleet.block")
        deadline = time.monotonic() + BLOCK_LIMIT
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        return kind
