"""What is current: the running task's request and task, and the default app.

The request lives in a context variable: a thread of the threads pool, a child process, or an
``asyncio`` task of the asyncio pool, each sees its own. Producers read it so that a task sent
from inside another task carries ``parent_id`` and ``root_id``.

The default app is the one explicit global that Celery's documented API needs (``@shared_task``,
``AsyncResult(id)`` without an app, ``current_app``): the app created last, unless one was made
the default with ``app.set_default()``. It is read through :func:`current_app`, a function: no
proxy object resolves it behind an attribute access.
"""

from __future__ import annotations

import operator
import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from celeriac.errors import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.task import Task


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

    def __reduce__(self) -> tuple[type[Request], tuple[Any, ...]]:
        """Pickled as its fields in order: the prefork pool pickles one per task for its child,
        and this is less than half the cost of the slots dataclass's default (a Python
        ``__getstate__`` and ``__setstate__``)."""
        return Request, _request_fields(self)

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1

    @property
    def called_directly(self) -> bool:
        """True when the task was called as a plain function (``add(2, 2)``), not run by a
        worker or ``apply()`` (Celery's ``request.called_directly``)."""
        return not self.id

    @property
    def origin(self) -> str | None:
        """Who sent the message (``gen<pid>@<host>``), from its ``origin`` header."""
        value: str | None = self.headers.get("origin")
        return value

    @property
    def utc(self) -> bool:
        """Times in the message are UTC (always, in protocol v2)."""
        return True

    def __getattr__(self, name: str) -> Any:
        """A custom message header (``apply_async(headers={"tenant": "x"})``) reads as
        ``self.request.tenant``, as in Celery; only names that are not fields get here."""
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.headers[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} has no attribute or message header {name!r}"
            ) from None

    def get(self, name: str, default: Any = None) -> Any:
        """Celery's ``self.request.get(name, default)``: a field or a header, else ``default``."""
        try:
            return getattr(self, name)
        except AttributeError:
            return default


#: Every field of a Request, in its ``__init__`` order (see ``Request.__reduce__``).
_request_fields = operator.attrgetter(*(f.name for f in fields(Request)))


_current_request: ContextVar[Request | None] = ContextVar("celeriac_request", default=None)
_current_task: ContextVar[Task[Any, Any] | None] = ContextVar("celeriac_task", default=None)


def current_request() -> Request | None:
    """The request of the task running in this context, or ``None`` outside a task."""
    return _current_request.get()


def current_task() -> Task[Any, Any] | None:
    """The task running in this context (Celery's ``current_task``), or ``None`` outside one."""
    return _current_task.get()


class running:
    """Context manager that makes ``request`` (and its ``task``) current for the code inside."""

    __slots__ = ("_request", "_task", "_task_token", "_token")

    def __init__(self, request: Request, task: Task[Any, Any] | None = None) -> None:
        self._request = request
        self._task = task

    def __enter__(self) -> Request:
        self._token = _current_request.set(self._request)
        self._task_token = _current_task.set(self._task)
        return self._request

    def __exit__(self, *exc: object) -> None:
        _current_task.reset(self._task_token)
        _current_request.reset(self._token)


# -- the default app --------------------------------------------------------------------------

_apps: weakref.WeakSet[Celeriac] = weakref.WeakSet()
_default: weakref.ref[Celeriac] | None = None
_default_chosen = False


def app_created(app: Celeriac, set_as_current: bool = True) -> None:
    """Called by every new app: it becomes the default (the app created last) unless another
    was chosen with ``set_default()`` or this one asks not to be (``set_as_current=False``)."""
    global _default
    _apps.add(app)
    if set_as_current and not _default_chosen:
        _default = weakref.ref(app)


def set_default_app(app: Celeriac) -> None:
    """Make ``app`` the default from now on, whatever apps are created later."""
    global _default, _default_chosen
    _apps.add(app)
    _default, _default_chosen = weakref.ref(app), True


def reset_default_app() -> None:
    """Forget the default app and any ``set_default()`` choice: the next app created becomes the
    default. For test suites, which make many apps in one process."""
    global _default, _default_chosen
    _default, _default_chosen = None, False


def live_apps() -> list[Celeriac]:
    """Every app of this process still in use (``@shared_task`` attaches to each)."""
    return list(_apps)


def default_app() -> Celeriac | None:
    """The default app (see :func:`current_app`), or ``None`` when no app exists."""
    return _default() if _default is not None else None


def current_app() -> Celeriac:
    """The default app: the one given to ``app.set_default()``, else the one created last.

    Raises :class:`~celeriac.errors.ImproperlyConfigured` when no app exists yet (Celery would
    make an empty one here, which then sends to a broker nobody configured).
    """
    app = default_app()
    if app is None:
        raise ImproperlyConfigured(
            "no celeriac app exists yet: create one (Celeriac(...)) before using the default app"
        )
    return app
