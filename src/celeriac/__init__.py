"""celeriac: a distributed task queue for Python, Celery's model built again.

Explicit re-exports only (a test checks ``__all__``); importing celeriac opens no connection.

Each name is imported on first use (:pep:`562`), as Celery's package does: ``import celeriac``
(which every ``celeriac.*`` import runs first) costs almost nothing, so that ``celeriac call``
does not import the worker, and ``celeriac worker`` starts the prefork pool's fork server
before it imports the rest (see :mod:`celeriac.worker.pools.starter`). Type checkers read the
imports below as usual.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
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

#: Where each exported name lives: the module imported when the name is first read.
_WHERE: dict[str, str] = {
    "AsyncResult": "celeriac.results.result",
    "Binding": "celeriac.routing",
    "Broadcast": "celeriac.routing",
    "Celeriac": "celeriac.app",
    "CeleriacError": "celeriac.errors",
    "ChordError": "celeriac.errors",
    "ContentDisallowed": "celeriac.errors",
    "DecodeError": "celeriac.errors",
    "EagerResult": "celeriac.results.result",
    "Exchange": "celeriac.routing",
    "GroupResult": "celeriac.results.group",
    "Ignore": "celeriac.errors",
    "ImproperlyConfigured": "celeriac.errors",
    "MaxRetriesExceededError": "celeriac.errors",
    "NotRegistered": "celeriac.errors",
    "Queue": "celeriac.routing",
    "Reject": "celeriac.errors",
    "RemoteError": "celeriac.errors",
    "Request": "celeriac.context",
    "ResultTooLarge": "celeriac.errors",
    "Retry": "celeriac.errors",
    "Signature": "celeriac.canvas.signature",
    "SoftTimeLimitExceeded": "celeriac.errors",
    "Task": "celeriac.task",
    "TaskRejectedError": "celeriac.errors",
    "TaskRevokedError": "celeriac.errors",
    "TimeLimitExceeded": "celeriac.errors",
    "TimeoutError": "celeriac.errors",
    "TransportError": "celeriac.errors",
    "Worker": "celeriac.worker.worker",
    "WorkerLostError": "celeriac.errors",
    "chain": "celeriac.canvas.primitives",
    "chord": "celeriac.canvas.primitives",
    "chunks": "celeriac.canvas.primitives",
    "current_app": "celeriac.context",
    "current_request": "celeriac.context",
    "current_task": "celeriac.context",
    "group": "celeriac.canvas.primitives",
    "maybe_signature": "celeriac.canvas.signature",
    "shared_task": "celeriac.task",
    "signals": "celeriac.signals",
    "signature": "celeriac.canvas.signature",
    "states": "celeriac.states",
    "xmap": "celeriac.canvas.primitives",
    "xstarmap": "celeriac.canvas.primitives",
}


def __getattr__(name: str) -> _typing.Any:
    """Import the module that holds ``name`` on first use and keep the name here, so later
    reads are plain attribute reads. ``signals`` and ``states`` are submodules themselves."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found = _importlib.import_module(module)
    value = found if module == f"{__name__}.{name}" else getattr(found, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
