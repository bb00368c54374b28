"""The ``task-*`` events of one request, with Celery's fields, built where the consumer learns
of each step: received (pre-checks passed), started (the pool took it), and how it ended
(from the pool's outcome).

They are sent by the worker's main process only: a prefork child sends nothing, so events cost
one dict per step in the process that already holds the request, and a child that dies cannot
lose its events. Each function returns at once when the dispatcher does not send task events
(no ``-E``, or ``disable_events``): the price of events switched off is one method call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.errors import Retry
from celeriac.protocol.message import safe_repr

if TYPE_CHECKING:
    from celeriac.context import Request
    from celeriac.events.dispatcher import EventDispatcher
    from celeriac.execution.executor import Outcome

TASK = "task"


def received(events: EventDispatcher, request: Request) -> None:
    """``task-received``: the worker holds the request and will run it."""
    if not events.sends(TASK):
        return
    headers = request.headers or {}
    args = headers.get("argsrepr")
    kwargs = headers.get("kwargsrepr")
    events.send(
        "task-received",
        uuid=request.id,
        name=request.task,
        args=args if isinstance(args, str) else safe_repr(request.args),
        kwargs=kwargs if isinstance(kwargs, str) else safe_repr(request.kwargs),
        root_id=request.root_id,
        parent_id=request.parent_id,
        retries=request.retries,
        eta=request.eta or None,
        expires=request.expires or None,
    )


def started(events: EventDispatcher, task_id: str) -> None:
    """``task-started``: a pool slot (thread, child, coroutine) began running it."""
    if events.sends(TASK):
        events.send("task-started", uuid=task_id)


def revoked(
    events: EventDispatcher,
    task_id: str,
    *,
    terminated: bool = False,
    signum: int | None = None,
    expired: bool = False,
) -> None:
    """``task-revoked``: not run (revoked or expired), or stopped while running."""
    if events.sends(TASK):
        events.send(
            "task-revoked", uuid=task_id, terminated=terminated, signum=signum, expired=expired
        )


def unknown(events: EventDispatcher, task_id: str, name: str) -> None:
    """``task-failed`` for a message of a task this worker does not have (Celery sends only
    ``exception`` then)."""
    if events.sends(TASK):
        events.send("task-failed", uuid=task_id, exception=f"NotRegistered({name!r})")


def finished(
    events: EventDispatcher, task_id: str, outcome: Outcome, signum: int | None = None
) -> None:
    """The event of how a run ended: succeeded, failed, retried, revoked (terminated, or
    expired in the pool's queue) or rejected; an ignored run (``Ignore``) sends none."""
    if not events.sends(TASK):
        return
    state = outcome.state
    if state == states.SUCCESS:
        events.send(
            "task-succeeded",
            uuid=task_id,
            result=(
                outcome.result_repr if outcome.result_repr is not None else safe_repr(outcome.value)
            ),
            runtime=outcome.runtime,
        )
    elif state == states.FAILURE:
        events.send("task-failed", uuid=task_id, **_error(outcome))
    elif state == states.RETRY:
        events.send("task-retried", uuid=task_id, **_retry(outcome))
    elif state == states.REVOKED:
        terminated = outcome.reason == "terminated"
        expired = bool(outcome.reason and outcome.reason.startswith("expired"))
        events.send(
            "task-revoked",
            uuid=task_id,
            terminated=terminated,
            signum=signum if terminated else None,
            expired=expired,
        )
    elif state == states.REJECTED:
        events.send("task-rejected", uuid=task_id, requeue=outcome.settle == "requeue")


def _error(outcome: Outcome) -> dict[str, Any]:
    return {"exception": safe_repr(outcome.exc), "traceback": outcome.traceback or ""}


def _retry(outcome: Outcome) -> dict[str, Any]:
    """Celery's ``task-retried`` names the exception the retry was for (``exc=``), so a bare
    ``self.retry()`` shows ``None`` in Flower, as a Celery worker's does, not the ``Retry``."""
    exc = outcome.exc
    return {
        "exception": safe_repr(exc.exc if isinstance(exc, Retry) else exc),
        "traceback": outcome.traceback or "",
    }
