"""The one exception tree of celeriac.

Two branches that never mix: control flow raised *on purpose* by task code to steer the worker
(``Retry``, ``Reject``, ``Ignore``), and errors that say something went wrong::

    BaseException
    └── TaskControl                  control flow, never a failure in itself
        ├── Retry                    "run me again later" (raised by Task.retry)
        ├── Reject                   "do not run me; dead-letter or requeue this message"
        └── Ignore                   "forget this message: no state, no result"
    Exception
    └── CeleriacError
        ├── ImproperlyConfigured     a bad setting, task option or URL (names the culprit)
        │   ├── AppNotFound          ``-A module[:attr]`` names no app (says why)
        │   └── QueueNotFound        a route names a queue that task_queues lacks
        ├── NotRegistered            a task name that no app knows
        ├── DecodeError              a message or result that cannot be decoded (says why;
        │   │                        also named InvalidTaskError, as in Celery)
        │   └── ContentDisallowed    a content type not in accept_content (pickle, say)
        ├── TransportError           the broker cannot be reached or refused an operation
        │                            (also named OperationalError, as in Celery/kombu)
        ├── BackendError             the result backend failed
        ├── TimeoutError             AsyncResult.get() waited longer than its timeout
        ├── TaskError                raised *inside* tasks by the worker
        │   ├── MaxRetriesExceededError
        │   ├── TaskRevokedError
        │   │   └── Terminated       a revoke with terminate=True stopped it while it ran
        │   ├── TaskRejectedError
        │   ├── TimeLimitExceeded
        │   ├── SoftTimeLimitExceeded
        │   ├── WorkerLostError
        │   └── ChordError           a chord's header task failed, so its body fails too
        └── RemoteError              a task's exception whose type cannot be imported here

Control flow derives from ``BaseException`` so that a task's blanket ``except Exception`` does not
swallow a ``self.retry()`` by mistake.
"""

from __future__ import annotations

import builtins
from typing import Any


class TaskControl(BaseException):
    """Base of the control-flow signals a task raises to steer its own outcome."""


class Retry(TaskControl):
    """Raised by ``Task.retry``: the worker schedules the task again and records RETRY."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | None = None,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message or (f"Retry in {when}s" if when is not None else "Retry"))

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message, self.exc, self.when))


class Reject(TaskControl):
    """Raised by a task to refuse its message: requeued, or dead-lettered with ``reason``."""

    def __init__(self, reason: str = "rejected by task", requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.reason, self.requeue))


class Ignore(TaskControl):
    """Raised by a task so that the worker acks the message and records nothing."""


class CeleriacError(Exception):
    """Base of every error celeriac raises."""


class ImproperlyConfigured(CeleriacError):
    """A setting, task option or URL is wrong; the message names which and why."""


class AppNotFound(ImproperlyConfigured):
    """``-A module[:attr]`` does not lead to an app: the module, attribute or app is missing."""


class QueueNotFound(ImproperlyConfigured, KeyError):
    """A route names a queue that ``task_queues`` lacks, and ``task_create_missing_queues`` is
    off (Celery's ``QueueNotFound``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotRegistered(CeleriacError, KeyError):
    """No task of that name is registered with the app."""

    def __str__(self) -> str:
        return f"task {self.args[0]!r} is not registered" if self.args else "task not registered"


class DecodeError(CeleriacError):
    """A message or stored result cannot be decoded; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ContentDisallowed(DecodeError):
    """The message's content type is not in ``accept_content``."""


class TransportError(CeleriacError):
    """The broker cannot be reached, or it refused an operation."""


class BackendError(CeleriacError):
    """The result backend failed."""


class ResultTooLarge(CeleriacError):
    """A task's result encodes to more than ``result_max_bytes``: stored as this failure
    instead, so a huge return value never wedges the result store."""


class TimeoutError(CeleriacError, builtins.TimeoutError):
    """``AsyncResult.get`` waited longer than its timeout. Also a builtin ``TimeoutError``."""


class TaskError(CeleriacError):
    """Base of the errors the worker raises inside, or about, a task."""


class MaxRetriesExceededError(TaskError):
    """The task asked to retry more times than ``max_retries`` allows."""


class TaskRevokedError(TaskError):
    """The task was revoked (or expired) before it ran."""


class Terminated(TaskRevokedError):
    """A revoke with ``terminate=True`` stopped the task while it ran (Celery's ``Terminated``)."""


class TaskRejectedError(TaskError):
    """The task refused its message with ``Reject`` (the reason is the message)."""


class TimeLimitExceeded(TaskError):
    """The hard time limit stopped the task."""


class SoftTimeLimitExceeded(TaskError):
    """The soft time limit was reached; raised inside the task so it can clean up."""


class WorkerLostError(TaskError):
    """The process running the task died (killed, out of memory) before it finished."""


class ChordError(TaskError):
    """A task in a chord's header failed: the body is not run and fails with this, naming it."""


class RemoteError(CeleriacError):
    """A task failed with an exception whose type cannot be imported in this process."""

    def __init__(self, exc_type: str, exc_module: str, message: str) -> None:
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.exc_message = message
        super().__init__(f"{exc_module}.{exc_type}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.exc_type, self.exc_module, self.exc_message))


#: Celery's and kombu's names for the same errors.
OperationalError = TransportError
InvalidTaskError = DecodeError

__all__ = [
    "AppNotFound",
    "BackendError",
    "CeleriacError",
    "ChordError",
    "ContentDisallowed",
    "DecodeError",
    "Ignore",
    "ImproperlyConfigured",
    "InvalidTaskError",
    "MaxRetriesExceededError",
    "NotRegistered",
    "OperationalError",
    "QueueNotFound",
    "Reject",
    "RemoteError",
    "Retry",
    "SoftTimeLimitExceeded",
    "TaskControl",
    "TaskError",
    "TaskRejectedError",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "TransportError",
    "WorkerLostError",
]
