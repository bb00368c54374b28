"""What a task's end does to its message: one rule for the consumer and for a prefork child
that fetched the message itself (:mod:`celeriac.worker.pools.fetching`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from celeriac import states

if TYPE_CHECKING:
    from celeriac.execution.executor import Outcome
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

Op = Literal["ack", "requeue", "reject"]


def settlement(
    task: Task[Any, Any], task_id: str, outcome: Outcome, *, early: bool
) -> tuple[Op, str]:
    """``(op, reason)``: ack, requeue, or reject (dead-letter) with the reason.

    A message acked early (the task is not ``acks_late``) was acked when it started, so the
    task's wish to requeue or reject it is only warned of. An ``acks_late`` task's message is
    requeued or rejected as its outcome asks, rejected when it failed unless
    ``acks_on_failure_or_timeout`` says to ack failures (Celery's default), and acked otherwise.
    """
    if early:
        if outcome.settle != "ack":
            logger.warning(
                "Task %s[%s] asked to %s its message, but it was acked early "
                "(set acks_late=True for that)",
                task.name,
                task_id,
                outcome.settle,
            )
        return "ack", ""
    if outcome.settle == "requeue":
        return "requeue", ""
    if outcome.settle == "reject":
        return "reject", outcome.reason or "rejected by task"
    if outcome.state == states.FAILURE and not task.option(
        "acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout"
    ):
        return "reject", f"task failed: {outcome.exc!r}"
    return "ack", ""
