"""The running task's request, held in a context variable (no global app, no thread-locals).

A context variable follows the code that runs a task: a thread of the threads pool, a child
process, or an ``asyncio`` task of the asyncio pool, each sees its own request. Producers read it
so that a task sent from inside another task carries ``parent_id`` and ``root_id``.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Request:
    """What a running task knows about its own invocation (``self.request`` in a bound task)."""

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    is_eager: bool = False
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: Any = None
    headers: dict[str, Any] = field(default_factory=dict)
    ignore_result: bool = False
    delivery_count: int = 1
    timelimit: tuple[float | None, float | None] = (None, None)
    #: Ids of the tasks this task sent while it ran (stored with its result: ``children``).
    children: list[str] = field(default_factory=list)
    #: Task.retry stored RETRY before sending the next attempt (the worker must not store it).
    retry_stored: bool = False

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1


_current_request: ContextVar[Request | None] = ContextVar("celeriac_request", default=None)


def current_request() -> Request | None:
    """The request of the task running in this context, or ``None`` outside a task."""
    return _current_request.get()


class running:
    """Context manager that makes ``request`` current for the code inside it."""

    __slots__ = ("_request", "_token")

    def __init__(self, request: Request) -> None:
        self._request = request

    def __enter__(self) -> Request:
        self._token = _current_request.set(self._request)
        return self._request

    def __exit__(self, *exc: object) -> None:
        _current_request.reset(self._token)
