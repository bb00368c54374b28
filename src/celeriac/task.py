"""``Task[P, R]``: a function made sendable, typed by its own signature.

``@app.task`` turns ``def add(x: int, y: int) -> int`` into a ``Task[[int, int], int]``: calling it
runs it here, ``add.delay(2, 3)`` sends it and is type-checked against ``(x: int, y: int)`` (mypy
rejects ``add.delay("x", y=[])``), and the ``AsyncResult[int]`` it returns gives an ``int``.
``async def`` functions are tasks too: ``R`` is what the coroutine returns.

Options are declared, not guessed: :data:`CORE_OPTIONS` plus what the app's middleware declares;
anything else fails when the task is declared, naming the option.

Celery's ways of writing tasks work too: a ``Task`` subclass given as ``base=`` (or the app's
``task_cls``) lends its class attributes as option defaults (``max_retries = 5``,
``autoretry_for = (IOError,)``) and its hooks (``before_start``, ``on_success``, ``on_failure``,
``on_retry``, ``after_return``) to every task built on it; a subclass with a ``run`` method is a
class-based task (``app.register_task(MyTask())``); ``@shared_task`` declares a task for every app.
"""

from __future__ import annotations

import inspect
import random
import types
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    NoReturn,
    ParamSpec,
    TypeVar,
    overload,
)

from celeriac import states
from celeriac.canvas.signature import Signature, record_child
from celeriac.context import Request, current_app, current_request, live_apps
from celeriac.errors import (
    Ignore,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    Retry,
    TransportError,
)
from celeriac.results.base import ResultMeta

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.app.base import BoundTaskDecorator, TaskDecorator
    from celeriac.canvas.primitives import chunks, xmap, xstarmap
    from celeriac.results.result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")

#: Options of the core, with their defaults (None: take the app's setting). Features declare
#: their own (time limits in the pools, ``rate_limit`` in the consumer, user components'
#: ``task_options``), and the app accepts the union.
CORE_OPTIONS: dict[str, Any] = {
    "name": None,
    "bind": False,
    "queue": None,
    "routing_key": None,
    "exchange": None,
    "priority": None,
    "serializer": None,
    "compression": None,
    "expires": None,
    "ignore_result": None,
    "store_errors_even_if_ignored": None,
    "track_started": None,
    "acks_late": None,
    "reject_on_worker_lost": None,
    "acks_on_failure_or_timeout": None,
    "max_retries": None,
    "default_retry_delay": None,
    "autoretry_for": (),
    "dont_autoretry_for": (),
    "retry_kwargs": None,
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "throws": (),
    "typing": True,
    # accepted for Celery's sake; what they ask is what celeriac does anyway
    "trail": True,  # a task's children are always recorded
    "send_events": True,  # events follow the worker's -E / worker_send_task_events
    "lazy": True,  # registration never connects or finalizes anything
    "shared": True,  # @app.task tasks belong to their app; @shared_task ones to every app
}

#: The hooks a Task subclass may override (Celery's), called by the worker around each run.
HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")

#: Option names a Task subclass may set as class attributes (the worker's own included).
_CLASS_OPTIONS = frozenset(CORE_OPTIONS) | {"time_limit", "soft_time_limit", "rate_limit"}

#: What ``apply_async`` accepts, so a misspelt send option fails loudly too.
SEND_OPTIONS = frozenset(
    {
        "countdown",
        "eta",
        "expires",
        "queue",
        "routing_key",
        "exchange",
        "priority",
        "task_id",
        "headers",
        "serializer",
        "compression",
        "ignore_result",
        "link",
        "link_error",
        "retries",
        "root_id",
        "parent_id",
        "group_id",
        "time_limit",
        "soft_time_limit",
        "reply_to",
        "shadow",
        "argsrepr",
        "kwargsrepr",
        "retry",
        "retry_policy",
        # a workflow's place, set by the canvas (see celeriac.canvas.flow)
        "chain",
        "chord",
    }
)


def check_send_options(task_name: str, options: Mapping[str, Any]) -> None:
    unknown = set(options) - SEND_OPTIONS
    if unknown:
        raise TypeError(
            f"{task_name}.apply_async() got unknown option(s) {sorted(unknown)}; "
            f"known: {', '.join(sorted(SEND_OPTIONS))}"
        )


def _class_options(cls: type) -> dict[str, Any]:
    """The options a Task subclass sets as class attributes, the most derived class winning."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is Task or not (isinstance(klass, type) and issubclass(klass, Task)):
            continue
        for key, value in vars(klass).items():
            if key in _CLASS_OPTIONS and not isinstance(value, property):
                found[key] = value
    return found


class Task(Generic[P, R]):
    """A registered task. Build it with ``@app.task`` (or ``@shared_task``); subclass it for a
    ``base=`` class or a class-based task with a ``run`` method."""

    #: Celery's names for the errors a task meets, as attributes of every task.
    MaxRetriesExceededError = MaxRetriesExceededError
    OperationalError = TransportError

    #: The app of the classes ``app.Task`` makes (their tasks belong to it wherever registered).
    bound_app: ClassVar[Celeriac | None] = None
    #: Until ``__init__`` ran (a class-based task whose own ``__init__`` does not call it is set
    #: up when registered): no app of its own, no hooks.
    _app: Celeriac | None = None
    hooks: frozenset[str] = frozenset()
    #: Celery's ``shadow_name(args, kwargs, options)`` hook, when a subclass defines it: a
    #: display name for a send. None here so that a plain send finds it at once (looked up
    #: missing, it went through ``__getattr__`` and built an error each ``.delay()``).
    shadow_name: Callable[..., str | None] | None = None

    def __init__(
        self,
        app: Celeriac | None = None,
        fn: Callable[..., Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        cls = type(self)
        options = {**_class_options(cls), **(options or {})}
        if fn is None:  # a class-based task: its run() takes self, as a bound task's function
            if cls.run is Task.run:
                raise ImproperlyConfigured(
                    f"{cls.__name__}: a class-based task defines run(self, ...)"
                )
            fn = cls.run
            options["bind"] = True
            default_name = f"{cls.__module__}.{cls.__name__}"
        elif app is not None:
            default_name = app.gen_task_name(fn.__name__, fn.__module__)
        else:
            default_name = f"{fn.__module__}.{fn.__name__}"
        self._app = app
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.name: str = options.get("name") or default_name
        self.options = options
        self.bind: bool = bool(options.get("bind", False))
        self._read_options()
        self.__doc__ = fn.__doc__ or cls.__doc__
        self.__wrapped__ = fn
        self.__module__ = fn.__module__
        self._signature = inspect.signature(fn)
        self._positional = _positional_range(self._signature, skip=1 if self.bind else 0)
        #: The hooks this task's class overrides: the worker calls only these.
        self.hooks = frozenset(h for h in HOOKS if getattr(cls, h) is not getattr(Task, h))
        self._check_types()

    def _read_options(self) -> None:
        """The attributes the executor reads on every run, from :attr:`options`."""
        options = self.options
        self.autoretry_for: tuple[type[BaseException], ...] = tuple(
            options.get("autoretry_for") or ()
        )
        self.dont_autoretry_for: tuple[type[BaseException], ...] = tuple(
            options.get("dont_autoretry_for") or ()
        )
        self.throws: tuple[type[BaseException], ...] = tuple(options.get("throws") or ())
        self.retry_backoff: bool | float = options.get("retry_backoff", False)
        self.retry_backoff_max: float = float(options.get("retry_backoff_max", 600))
        self.retry_jitter: bool = bool(options.get("retry_jitter", True))
        self.retry_kwargs: dict[str, Any] = dict(options.get("retry_kwargs") or {})
        self.typing: bool = bool(options.get("typing", True))

    def annotate(self, values: Mapping[str, Any]) -> None:
        """Apply a ``task_annotations`` entry, as Celery does: task options (``rate_limit``,
        ``acks_late``...) change the options; a function becomes a method of this task
        (``{"on_failure": my_on_failure}``, called with the task first); ``"@name"`` wraps the
        method ``name`` with ``around(original)``; anything else is set as an attribute."""
        for key, value in values.items():
            if key in _CLASS_OPTIONS and key not in ("name", "bind"):
                self.options[key] = value
                continue
            if key.startswith("@"):
                key = key[1:]
                original = getattr(type(self), key)
                value = value(getattr(original, "__wrapped__", original))
            if isinstance(value, types.FunctionType):
                value = types.MethodType(value, self)
            setattr(self, key, value)
            if key in HOOKS:
                self.hooks = self.hooks | {key}
        self._read_options()
        self._check_types()

    @property
    def app(self) -> Celeriac:
        """The app this task belongs to: the one it was declared or registered on, else (for a
        ``@shared_task`` used directly) the default app."""
        app = self._app or type(self).bound_app
        return app if app is not None else current_app()

    @app.setter
    def app(self, app: Celeriac) -> None:
        self._app = app

    if not TYPE_CHECKING:  # hidden from type checkers: a typo'd attribute stays an error

        def __getattr__(self, name: str) -> Any:
            """A ``@shared_task`` object used directly lends what its copy on the default app has
            and it lacks (Celery's shared task is a proxy to that copy): the Django fixup's
            ``delay_on_commit``, a ``task_cls`` method. Called only when normal lookup fails."""
            missing = AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            shared = self.__dict__.get("_app") is None and type(self).bound_app is None
            if name.startswith("_") or not shared:
                raise missing
            copy = current_app().tasks.get(self.__dict__.get("name", ""))
            if copy is None or copy is self:
                raise missing
            return getattr(copy, name)

    def bound_to(self, app: Celeriac) -> Task[P, R]:
        """A copy of this task that belongs to ``app`` (how a shared task joins each app)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy._app = app
        return copy

    @property
    def backend(self) -> Any:
        """The app's result backend (Celery's ``self.backend``)."""
        return self.app.backend

    def _check_types(self) -> None:
        for key in ("autoretry_for", "dont_autoretry_for", "throws"):
            for cls in getattr(self, key):
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise ImproperlyConfigured(
                        f"task {self.name!r}: {key} must hold exception classes, not {cls!r}"
                    )

    # -- effective options (task option, else the app's setting) ------------------------------
    def option(self, name: str, setting: str | None = None) -> Any:
        value = self.options.get(name)
        if value is None and setting is not None:
            value = getattr(self.app.conf, setting)
        return value

    @property
    def acks_late(self) -> bool:
        return bool(self.option("acks_late", "task_acks_late"))

    @property
    def ignore_result(self) -> bool:
        return bool(self.option("ignore_result", "task_ignore_result"))

    @property
    def max_retries(self) -> int | None:
        value = self.options.get("max_retries")
        return self.app.conf.task_max_retries if value is None else int(value)

    @property
    def default_retry_delay(self) -> float:
        return float(self.option("default_retry_delay", "task_default_retry_delay"))

    @property
    def track_started(self) -> bool:
        return bool(self.option("track_started", "task_track_started"))

    @property
    def rate_limit(self) -> Any:
        return self.option("rate_limit", "task_default_rate_limit")

    @property
    def time_limit(self) -> float | None:
        value: float | None = self.option("time_limit", "task_time_limit")
        return value

    @property
    def soft_time_limit(self) -> float | None:
        value: float | None = self.option("soft_time_limit", "task_soft_time_limit")
        return value

    @property
    def serializer(self) -> str:
        return str(self.option("serializer", "task_serializer"))

    @property
    def request(self) -> Request:
        """The current request of this task (inside a bound task: ``self.request``)."""
        request = current_request()
        if request is None:
            return Request(id="", task=self.name, is_eager=True)
        return request

    # -- running here ---------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the task here and now, as a plain call (a coroutine for ``async def``). A subclass
        may override it to wrap every run (Celery's pattern), calling ``self.run(...)``."""
        return self.run(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task's body: the decorated function (a class-based task defines its own)."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    # -- hooks: override in a subclass (base=, task_cls, class-based tasks) -------------------
    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Called by the worker just before the task runs."""

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Called by the worker after the task succeeded and its result was handed to the store."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """Called by the worker after the task failed (``einfo``: an ``ExceptionInfo``)."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """Called by the worker when the task is to be retried."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """Called by the worker after every run, whatever its outcome, after the other hooks."""

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        **kwargs: Any,
    ) -> None:
        """Store a state of this run now (Celery's ``update_state``): a custom one such as
        ``PROGRESS`` with ``meta={"done": 3, "total": 10}``, which ``AsyncResult.state`` and
        ``AsyncResult.info`` read while the task runs. Nothing happens without a backend."""
        request = self.request
        backend = self.app.backend
        if backend is None:
            return
        backend.store(
            ResultMeta(
                task_id or request.id,
                state or states.PENDING,
                meta,
                name=self.name,
                retries=request.retries,
                parent_id=request.parent_id,
                root_id=request.root_id,
                group_id=request.group,
                reply_to=request.reply_to,
            )
        )

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Fail at send time, not in the worker, when the arguments cannot bind (``typing``)."""
        if not self.typing:
            return
        if not kwargs and self._positional is not None:
            low, high = self._positional  # the common .delay(a, b): counting is enough
            if low <= len(args) and (high is None or len(args) <= high):
                return
        try:
            if self.bind:
                self._signature.bind(None, *args, **kwargs)
            else:
                self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task in this process with the worker's semantics (retries, states)."""
        from celeriac.execution.eager import apply_eager  # the executor, only when asked

        return apply_eager(self, tuple(args or ()), dict(kwargs or {}), options)

    # -- sending --------------------------------------------------------------------------------
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; returns its result handle at once."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """The async twin of :meth:`delay`, for producers running on an event loop."""
        return await self.aapply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send the task with send options (countdown, eta, expires, queue, priority, link...)."""
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        self.check_arguments(args, kwargs)
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        if "shadow" not in options:
            self._shadow(args, kwargs, options)
        result: AsyncResult[R] = self.app.send_task(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            expires=expires,
            _task=self,
            **options,
        )
        record_child(result.id)
        return result

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """The async twin of :meth:`apply_async`."""
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        self.check_arguments(args, kwargs)
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        if "shadow" not in options:
            self._shadow(args, kwargs, options)
        result: AsyncResult[R] = await self.app.asend_task(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            expires=expires,
            _task=self,
            **options,
        )
        record_child(result.id)
        return result

    def _shadow(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        """Celery's ``shadow_name(args, kwargs, options)`` hook: a display name for this send."""
        namer = self.shadow_name
        if namer is not None:
            shadow = namer(args, kwargs, options)
            if shadow:
                options["shadow"] = shadow

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with these arguments (partial: more can be prepended)."""
        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: as a callback, it ignores its parent's result."""
        return Signature(self.name, args, kwargs, immutable=True, app=self.app)

    def signature(
        self,
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
        **options: Any,
    ) -> Signature:
        """A signature of this task with send options (``countdown``, ``queue``...);
        ``immutable=True`` as ``si()``."""
        return Signature(
            self.name,
            tuple(args or ()),
            dict(kwargs or {}),
            options,
            immutable=immutable,
            app=self.app,
        )

    subtask = signature

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        return self.app.AsyncResult(task_id, task_name=self.name)

    def map(self, it: Iterable[Any]) -> xmap:
        """One message that runs this task over each item of ``it``: ``[task(x) for x in it]``."""
        from celeriac.canvas.primitives import xmap

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Sequence[Any]]) -> xstarmap:
        """One message that runs ``[task(*args) for args in it]``."""
        from celeriac.canvas.primitives import xstarmap

        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Sequence[Any]], n: int) -> chunks:
        """Split the argument tuples ``it`` into messages of ``n`` calls each, sent as a group."""
        from celeriac.canvas.primitives import chunks

        return chunks(self.s(), it, n, app=self.app)

    def replace(self, sig: Signature | Mapping[str, Any]) -> NoReturn:
        """Swap the running task for ``sig`` (a task or a whole workflow) and end this run.

        The replacement takes this task's place: its final task gets this task's id (so the
        caller's result handle gets its result), its chord membership, callbacks and errbacks,
        and the rest of this task's chain runs after it. This run ends with nothing stored.
        """
        from celeriac.canvas.primitives import chain, group, join_final, single_result
        from celeriac.canvas.signature import maybe_signature

        request = self.request
        if request.is_eager or not request.id:
            raise ImproperlyConfigured("Task.replace() works inside a task run by a worker")
        new = maybe_signature(sig, self.app)
        if isinstance(new, group) or request.chord:
            new = single_result(new)  # one result takes the place of this task's one result
        for callback in request.callbacks or ():
            new.link(callback)
        for errback in request.errbacks or ():
            new.link_error(errback)
        new.freeze(request.id)
        if request.chord and request.group:
            join_final(new, request.chord, request.group, request.headers.get("group_index"))
        rest = [Signature.from_dict(d, self.app) for d in reversed(request.chain or ())]
        whole = chain(new, *rest, app=self.app) if rest else new
        whole.apply_async(parent_id=request.id, root_id=request.root_id or request.id)
        raise Ignore()

    # -- retrying ---------------------------------------------------------------------------------
    def backoff_delay(self, retries: int) -> float:
        """The countdown before retry number ``retries + 1``: exponential when ``retry_backoff``.

        ``retry_backoff=True`` means a factor of 1 s (1, 2, 4, 8... s), a number sets the factor;
        the delay is capped by ``retry_backoff_max`` and, with ``retry_jitter``, drawn uniformly
        from ``[0, delay]`` ("full jitter") so a herd of retries spreads out.
        """
        if not self.retry_backoff:
            return self.default_retry_delay
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(self.retry_backoff_max, factor * (2.0**retries))
        if self.retry_jitter:
            delay = random.uniform(0, delay)
        return delay

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> NoReturn:
        """Schedule this task again (same id, ``retries + 1``) and raise :class:`Retry`.

        Past ``max_retries`` it re-raises ``exc`` when one is given (Celery's rule, so
        ``raise self.retry(exc=exc)`` ends in the task's own error), else raises
        :class:`MaxRetriesExceededError`.
        The new message waits on the broker for ``countdown`` seconds (default:
        ``default_retry_delay``), never in a worker's memory.
        """
        request = self.request
        if request.called_directly:  # add(2, 2) called as a function: nothing to send again
            raise exc if exc is not None else Retry("the task was called directly")
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc  # Celery's rule: past max_retries, the error that caused the retry
            error = MaxRetriesExceededError(
                f"{self.name}[{request.id}] retried {request.retries} times (max_retries={limit})"
                + (f": {exc!r}" if exc is not None else "")
            )
            raise error
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        new_args = tuple(request.args if args is None else args)
        new_kwargs = dict(request.kwargs if kwargs is None else kwargs)
        if request.is_eager:
            raise Retry(exc=exc, when=countdown)
        queue = options.pop("queue", None) or request.delivery_info.get("queue")
        extra_headers = options.pop("headers", None) or {}
        self._store_retry(request, exc)
        self.app.send_task(
            self.name,
            new_args,
            new_kwargs,
            countdown=countdown,
            eta=eta,
            expires=request.expires,
            task_id=request.id,
            retries=request.retries + 1,
            root_id=request.root_id,
            parent_id=request.parent_id,
            group_id=request.group,
            headers={**extra_headers, "group_index": request.headers.get("group_index")},
            chain=request.chain,
            chord=request.chord,
            link=request.callbacks,
            link_error=request.errbacks,
            queue=queue,
            _task=self,
            _from_retry=True,
            **options,
        )
        raise Retry(exc=exc, when=countdown)

    def _store_retry(self, request: Request, exc: BaseException | None) -> None:
        """Store RETRY *before* the next attempt is sent: stored after, it could land on top of
        that attempt's SUCCESS (another worker may run it at once), and a chord member would
        then look unfinished to the member that sends the body."""
        from celeriac.results.base import exception_to_dict

        backend = self.app.backend
        keep = (
            request.chord
            or not self.ignore_result
            or self.option("store_errors_even_if_ignored", "task_store_errors_even_if_ignored")
        )
        if backend is None or not keep:
            return
        error = exc if exc is not None else Retry()
        meta = ResultMeta(
            request.id,
            states.RETRY,
            exception_to_dict(error),
            retries=request.retries,
            parent_id=request.parent_id,
            root_id=request.root_id,
            group_id=request.group,
            reply_to=request.reply_to,
        )
        try:
            backend.store(meta)
            request.retry_stored = True
        except Exception as error_:  # the retry itself matters more than its interim state
            backend.outage.failed(error_, f"storing the RETRY state of {self.name}[{request.id}]")

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def build_task(
    app: Celeriac | None,
    fn: Callable[..., Any],
    options: Mapping[str, Any],
    base: type[Task[Any, Any]] | None = None,
) -> Task[Any, Any]:
    """The task ``@app.task`` or ``@shared_task`` makes of ``fn``: a plain :class:`Task`, or
    with a ``base`` class an instance of a subclass of it named after the function (Celery's
    shape, so ``isinstance(task, base)`` holds and the base's hooks and attributes apply)."""
    if base is None or base is Task:
        return Task(app, fn, options)
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise ImproperlyConfigured(f"base must be a celeriac Task subclass, not {base!r}")
    namespace = {
        "__module__": fn.__module__,
        "__qualname__": fn.__qualname__,
        "__doc__": fn.__doc__,
    }
    cls: type[Task[Any, Any]] = type(fn.__name__, (base,), namespace)
    return cls(app, fn, options)


#: The ``@shared_task`` tasks of this process, with their options: every app, the ones created
#: before and after, registers its own copy (see ``Celeriac.attach_shared``).
_shared: list[tuple[Task[Any, Any], dict[str, Any]]] = []


def shared_tasks() -> list[tuple[Task[Any, Any], dict[str, Any]]]:
    """Every ``@shared_task`` declared so far, with its options (``base`` included)."""
    return list(_shared)


@overload
def shared_task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...


@overload
def shared_task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def shared_task(*, bind: Literal[True], **options: Any) -> BoundTaskDecorator: ...


@overload
def shared_task(*, bind: Literal[False] = ..., **options: Any) -> TaskDecorator: ...


def shared_task(*args: Any, **options: Any) -> Any:
    """Declare a task for every app, without naming one (Celery's ``@shared_task``, for code
    such as a reusable Django app that cannot import its project's app).

    Each app, whether created before or after, registers its own copy, so a worker runs the task
    with its own app. The object returned is a real :class:`Task`, not a lazy proxy: sending it
    (``.delay()``) goes through the default app (the app created last, or ``set_default()``).
    """
    if len(args) > 1 or (args and not callable(args[0])):
        raise TypeError("shared_task takes one function, or keyword options only")
    known = _CLASS_OPTIONS | {"base"}
    unknown = sorted(set(options) - known)
    if unknown:
        # an option a worker component declares is checked by each app when it attaches
        live = live_apps()
        if not live or any(set(unknown) - set(app.task_options) for app in live):
            raise ImproperlyConfigured(
                f"unknown task option(s) {unknown}; known: {', '.join(sorted(known))}"
            )

    def decorate(fn: Callable[..., Any]) -> Task[Any, Any]:
        own = {k: v for k, v in options.items() if k != "base"}
        task = build_task(None, fn, own, options.get("base"))
        _shared.append((task, dict(options)))
        for app in live_apps():
            app.attach_shared(task, options)
        return task

    return decorate(args[0]) if args else decorate


def unknown_options(given: Iterable[str], known: Iterable[str]) -> list[str]:
    return sorted(set(given) - set(known))


def _positional_range(signature: inspect.Signature, skip: int = 0) -> tuple[int, int | None] | None:
    """How many positional arguments a call without keywords may pass, as ``(min, max)``
    (``max`` None with ``*args``); ``None`` when a keyword-only parameter is required (then
    only a full ``bind`` can tell)."""
    params = list(signature.parameters.values())[skip:]
    low, high = 0, 0
    unbounded = False
    for param in params:
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            high += 1
            if param.default is param.empty:
                low = high
        elif param.kind is param.VAR_POSITIONAL:
            unbounded = True
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            return None
    return low, (None if unbounded else high)
