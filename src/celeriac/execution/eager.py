"""``apply()`` and ``task_always_eager``: run a task in this process with the worker's semantics.

Retries run again at once (no countdown wait) until the task succeeds, fails or exhausts
``max_retries``, as in Celery; nothing is stored unless ``task_store_eager_result`` is set, and
``task_eager_propagates`` makes a failure raise from ``apply()`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.context import Request, current_request
from celeriac.execution.executor import execute, finish
from celeriac.protocol.message import new_id
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.results.result import EagerResult

if TYPE_CHECKING:
    from celeriac.task import Task


def apply_eager(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: Mapping[str, Any],
) -> EagerResult[Any]:
    parent = current_request()
    task_id = options.get("task_id") or new_id()
    retries = int(options.get("retries") or 0)
    store = task.app.conf.task_store_eager_result
    while True:
        request = Request(
            id=task_id,
            task=task.name,
            args=args,
            kwargs=kwargs,
            retries=retries,
            is_eager=True,
            root_id=parent.root_id if parent else task_id,
            parent_id=parent.id if parent else None,
            callbacks=None,
            errbacks=None,
        )
        outcome = execute(task, request)
        if outcome.state != states.RETRY:
            break
        retries += 1
    finish(task, request, outcome)
    if outcome.state == states.SUCCESS:
        meta = ResultMeta(task_id, states.SUCCESS, outcome.value, retries=retries, name=task.name)
    else:
        exc = outcome.exc if outcome.exc is not None else RuntimeError(outcome.reason)
        meta = ResultMeta(
            task_id,
            outcome.state,
            exception_to_dict(exc),
            outcome.traceback,
            retries=retries,
            name=task.name,
        )
        if task.app.conf.task_eager_propagates and outcome.state == states.FAILURE:
            raise exc
    if store and task.app.backend is not None:
        task.app.backend.store(meta)
    return EagerResult(meta, task.app, exception=outcome.exc)
