"""The two directions work crosses the fleet in: a Celery client to a celeriac worker, and a
celeriac client to a Celery worker. A :class:`Direction` holds what a test needs from the client's
library (its app, ``chain``, ``TaskRevokedError``) and where its tasks go (the queue only the other
kind of worker consumes), so one test body, written against Celery's API, runs both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interop.fleet import Fleet

DIRECTIONS = ["celery-to-celeriac", "celeriac-to-celery"]


@dataclass(frozen=True)
class Direction:
    client: Any
    chain: Any
    revoked_error: type[BaseException]
    #: The kind of worker that runs the tasks, its node and its own queue.
    worker: str
    node: str
    queue: str
    #: The other kind and its queue (for workflows that cross the fleet).
    other: str
    other_queue: str

    def task(self, name: str) -> Any:
        """The client's own task object (``app.tasks[name]``), as a project calls it."""
        return self.client.tasks[name]

    def sig(self, name: str, *args: Any, queue: str | None = None, **options: Any) -> Any:
        """``task.s(*args).set(queue=...)``, routed to the worker of this direction unless told."""
        return self.task(name).s(*args).set(queue=queue or self.queue, **options)


def direction(fleet: Fleet, which: str) -> Direction:
    names = fleet.names
    if which == "celery-to-celeriac":
        import celery  # type: ignore[import-untyped]
        from celery.exceptions import TaskRevokedError  # type: ignore[import-untyped]

        return Direction(
            client=fleet.celery,
            chain=celery.chain,
            revoked_error=TaskRevokedError,
            worker="celeriac",
            node=names.celeriac_node,
            queue=names.celeriac_queue,
            other="celery",
            other_queue=names.celery_queue,
        )
    import celeriac

    return Direction(
        client=fleet.celeriac,
        chain=celeriac.chain,
        revoked_error=celeriac.TaskRevokedError,
        worker="celery",
        node=names.celery_node,
        queue=names.celery_queue,
        other="celeriac",
        other_queue=names.celeriac_queue,
    )
