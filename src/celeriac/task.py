"""``Task[P, R]``: a function made sendable, typed by its own signature.

``@app.task`` turns ``def add(x: int, y: int) -> int`` into a ``Task[[int, int], int]``: calling it
runs it here, ``add.delay(2, 3)`` sends it and is type-checked against ``(x: int, y: int)`` (mypy
rejects ``add.delay("x", y=[])``), and the ``AsyncResult[int]`` it returns gives an ``int``.
``async def`` functions are tasks too: ``R`` is what the coroutine returns.

Options are declared, not guessed: :data:`CORE_OPTIONS` plus what the app's middleware declares;
anything else fails when the task is declared, naming the option.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar

from celeriac import states
from celeriac.canvas.signature import Signature, record_child
from celeriac.context import Request, current_request
from celeriac.errors import Ignore, ImproperlyConfigured, MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from celeriac.app import Celeriac
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
}

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


class Task(Generic[P, R]):
    """A registered task. Build it with ``@app.task``; never instantiate it directly."""

    def __init__(
        self,
        app: Celeriac,
        fn: Callable[..., Any],
        options: Mapping[str, Any],
    ) -> None:
        self.app = app
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.name: str = options.get("name") or f"{fn.__module__}.{fn.__name__}"
        self.options = dict(options)
        self.bind: bool = bool(options.get("bind", False))
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
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self.__module__ = fn.__module__
        self._signature = inspect.signature(fn)
        self._positional = _positional_range(self._signature, skip=1 if self.bind else 0)
        self._check_types()

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
    def request(self) -> Request:
        """The current request of this task (inside a bound task: ``self.request``)."""
        request = current_request()
        if request is None:
            return Request(id="", task=self.name, is_eager=True)
        return request

    # -- running here ---------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here and now, as a plain call (a coroutine for ``async def``)."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

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
        from celeriac.execution.eager import apply_eager

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

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with these arguments (partial: more can be prepended)."""
        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: as a callback, it ignores its parent's result."""
        return Signature(self.name, args, kwargs, immutable=True, app=self.app)

    def signature(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        return Signature(self.name, tuple(args), dict(kwargs or {}), options, app=self.app)

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

        Past ``max_retries`` it raises :class:`MaxRetriesExceededError` chained to ``exc``.
        The new message waits on the broker for ``countdown`` seconds (default:
        ``default_retry_delay``), never in a worker's memory.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            error = MaxRetriesExceededError(
                f"{self.name}[{request.id}] retried {request.retries} times (max_retries={limit})"
                + (f": {exc!r}" if exc is not None else "")
            )
            raise error from exc
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
        from celeriac.results.base import ResultMeta, exception_to_dict

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
