"""celeriac: a distributed task queue for Python, Celery's model built again.

Explicit re-exports only (a test checks ``__all__``); importing celeriac opens no connection.
"""

from celeriac import signals, states
from celeriac.app import Celeriac
from celeriac.canvas.primitives import chain, chord, chunks, group, xmap, xstarmap
from celeriac.canvas.signature import Signature, maybe_signature, signature
from celeriac.context import Request, current_app, current_request, current_task
from celeriac.errors import (
    CeleriacError,
    ChordError,
    ContentDisallowed,
    DecodeError,
    Ignore,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    RemoteError,
    ResultTooLarge,
    Retry,
    SoftTimeLimitExceeded,
    TaskRejectedError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
    TransportError,
    WorkerLostError,
)
from celeriac.results.group import GroupResult
from celeriac.results.result import AsyncResult, EagerResult
from celeriac.routing import Binding, Broadcast, Exchange, Queue
from celeriac.task import Task, shared_task
from celeriac.worker.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Binding",
    "Broadcast",
    "Celeriac",
    "CeleriacError",
    "ChordError",
    "ContentDisallowed",
    "DecodeError",
    "EagerResult",
    "Exchange",
    "GroupResult",
    "Ignore",
    "ImproperlyConfigured",
    "MaxRetriesExceededError",
    "NotRegistered",
    "Queue",
    "Reject",
    "RemoteError",
    "Request",
    "ResultTooLarge",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskRejectedError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "TransportError",
    "Worker",
    "WorkerLostError",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_request",
    "current_task",
    "group",
    "maybe_signature",
    "shared_task",
    "signals",
    "signature",
    "states",
    "xmap",
    "xstarmap",
]
