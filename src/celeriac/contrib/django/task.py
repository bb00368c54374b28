"""Sending a task once the surrounding database transaction commits (Django's ``on_commit``).

The bug this prevents: a view creates a row and sends a task that reads it; the worker picks the
message up before the view's transaction commits, and the task finds no row (or the old one). With
``delay_on_commit`` the message is published from ``transaction.on_commit``: after the commit,
never when the transaction rolls back, and at once when no transaction is open (autocommit).

Two spellings:

* Celery's methods, ``add.delay_on_commit(2, 2)`` and ``add.apply_async_on_commit((2, 2),
  countdown=5)``, on :class:`DjangoTask`, the task class of every app the Django fixup is
  installed on (unless the app names its own ``task_cls``: derive it from :class:`DjangoTask`);
* functions, :func:`delay_on_commit` and :func:`apply_async_on_commit`, which work on any task
  (a ``@shared_task`` object too) and keep the task's argument types for mypy.

Unlike Celery's, both return the :class:`~celeriac.results.result.AsyncResult` the task will have
(its id is chosen now), so a view can store the id in the same transaction; if the transaction
rolls back nothing is sent and that result stays PENDING. The arguments are checked against the
task's signature at once, in the view, not at commit time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from celeriac.protocol.message import new_id
from celeriac.task import Task

if TYPE_CHECKING:
    from celeriac.results.result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")


def apply_async_on_commit(
    task: Task[P, R],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    using: str | None = None,
    robust: bool = False,
    **options: Any,
) -> AsyncResult[R]:
    """``task.apply_async(args, kwargs, **options)`` when the transaction open on database
    ``using`` (the default database when ``None``) commits; at once if none is open.

    ``robust=True`` logs a failure to send instead of raising it from the commit (Django's
    ``on_commit(robust=True)``): the data is committed either way.
    """
    from django.db import transaction  # type: ignore[import-untyped]

    args, kwargs = tuple(args or ()), dict(kwargs or {})
    task.check_arguments(args, kwargs)
    options["task_id"] = options.get("task_id") or new_id()
    send = functools.partial(task.apply_async, args, kwargs, **options)
    transaction.on_commit(send, using=using, robust=robust)
    return task.AsyncResult(options["task_id"])


def delay_on_commit(task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
    """``task.delay(*args, **kwargs)`` once the transaction on the default database commits."""
    return apply_async_on_commit(task, args, kwargs)


class DjangoTask(Task[P, R]):
    """The task class of an app with the Django fixup: Celery's ``DjangoTask`` methods."""

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """:meth:`delay` once the transaction on the default database commits."""
        return apply_async_on_commit(self, args, kwargs)

    def apply_async_on_commit(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        using: str | None = None,
        robust: bool = False,
        **options: Any,
    ) -> AsyncResult[R]:
        """:meth:`apply_async` once the transaction on ``using`` commits (see
        :func:`apply_async_on_commit`)."""
        return apply_async_on_commit(self, args, kwargs, using=using, robust=robust, **options)
