"""``Celeriac``: the app. Settings, the task registry, and the wiring of transport and backend.

There is no global app: tasks belong to the app that declared them, results to the app that sent
them, and a process may hold several apps. Nothing connects until it is first needed, so building
an app (and importing a tasks module) is free of I/O; but every setting is validated at once, so a
bad one fails at start-up naming itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

from celeriac.app import config
from celeriac.app.batch import BatchSender
from celeriac.app.components import Component
from celeriac.app.producer import Producer
from celeriac.canvas.builtins import register_builtins
from celeriac.canvas.signature import Signature
from celeriac.context import Request, current_request
from celeriac.control import Control
from celeriac.errors import ImproperlyConfigured, NotRegistered
from celeriac.protocol.codec import BodyEncoder, Codecs, encode_body
from celeriac.protocol.message import (
    Message,
    new_id,
    new_ids,
    parse_time,
    safe_repr,
    task_message,
)
from celeriac.protocol.template import MessageTemplate
from celeriac.results import result as _result
from celeriac.results.base import Backend
from celeriac.results.writer import ResultWriter
from celeriac.routing import Queue, Route, Router
from celeriac.task import CORE_OPTIONS, Task, check_send_options
from celeriac.transports.base import Outgoing, Transport
from celeriac.transports.registry import check_transport_url, create_transport
from celeriac.utils.rates import parse_rate
from celeriac.utils.urls import redact_url

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: The task options the worker's features declare: time limits (``TASK_OPTIONS`` of
#: :mod:`celeriac.worker.pools.base`) and ``rate_limit`` (of :mod:`celeriac.worker.consumer`).
#: A copy, so that building an app and declaring its tasks does not import the worker (a
#: producer never runs one; ~15 ms of imports); ``tests/unit/test_import_cost.py`` checks that
#: it equals the originals.
WORKER_TASK_OPTIONS: dict[str, Any] = {
    "time_limit": None,
    "soft_time_limit": None,
    "rate_limit": None,
}


_ROUTE_KEYS = ("queue", "exchange", "routing_key", "priority")


@dataclass(frozen=True, slots=True)
class SendPlan:
    """The argument-independent part of a send (see :meth:`Celeriac.plan`)."""

    route: Route
    serializer: str
    compression: str | None
    embed: dict[str, Any]
    ignore_result: bool
    priority: int | None
    time_limit: tuple[Any, Any]
    task_expires: Any
    task: Any = None


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` returns: turns a function into a typed task."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class BoundTaskDecorator(Protocol):
    """What ``@app.task(bind=True, ...)`` returns: the task receives itself first."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R], /) -> Task[P, R]: ...


class Celeriac:
    """A celeriac application.

    >>> app = Celeriac("shop")                      # SQLite broker and results in ./celeriac.db
    >>> app = Celeriac("shop", broker="redis://127.0.0.1:6379/0", backend="redis://...")
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        config_source: Any = None,
        namespace: str | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = config.Settings()
        self._given: dict[str, Any] = {}
        if config_source is not None:
            self._given.update(config.from_object(config_source, namespace))
        for key, value in settings.items():
            self._given[key] = config.validate(key, value)
        if broker is not None:
            self._given["broker_url"] = config.validate("broker_url", broker)
        if backend is not None:
            self._given["result_backend"] = config.validate("result_backend", backend)
        self.codecs = Codecs.with_defaults()
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: Task options every task may use: the core ones plus those middleware declares.
        self.task_options: dict[str, Any] = {
            **CORE_OPTIONS,
            **WORKER_TASK_OPTIONS,
        }
        #: User worker components (classes), started by every worker of this app.
        self.components: list[Callable[[], Component]] = []
        self._control: Control | None = None
        self._writer: ResultWriter | None = None
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._backend_made = False
        self._router: Router | None = None
        self._producer: Producer | None = None
        self._configure()
        register_builtins(self)

    # -- settings ---------------------------------------------------------------------------------
    def _configure(self) -> None:
        fresh = config.Settings()
        config.apply(fresh, self._given)
        config.apply(fresh, config.from_environ())
        self._validate(fresh)
        self.conf = fresh
        self._router = None
        self._plans: dict[str, SendPlan] = {}
        self._backend, self._backend_made = None, False
        #: Whether sends carry a default ``reply_to`` (an ``rpc://`` backend); ``None`` until
        #: the first send finds out, so that a send to a store reads one attribute for it.
        self._replies: bool | None = None

    def _validate(self, conf: config.Settings) -> None:
        """Check what can be checked without I/O: serializer names, schemes, queues."""
        serializers = self.codecs.serializers
        for name in ("task_serializer", "result_serializer"):
            value = getattr(conf, name)
            try:
                serializers.resolve_accept([value])
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"setting {name!r}: {exc}") from None
        for name in ("accept_content", "result_accept_content"):
            value = getattr(conf, name)
            if value is not None:
                try:
                    serializers.resolve_accept(value)
                except ImproperlyConfigured as exc:
                    raise ImproperlyConfigured(f"setting {name!r}: {exc}") from None
        if conf.task_compression is not None and conf.task_compression not in (
            self.codecs.compressors
        ):
            raise ImproperlyConfigured(
                f"setting 'task_compression': unknown compression {conf.task_compression!r}"
            )
        check_transport_url(self._broker_url(conf))
        if conf.task_default_rate_limit is not None:
            try:
                parse_rate(conf.task_default_rate_limit)
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"setting 'task_default_rate_limit': {exc}") from None
        for queue in conf.task_queues or ():
            if not isinstance(queue, Queue):
                raise ImproperlyConfigured(f"setting 'task_queues' holds a non-Queue: {queue!r}")

    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Read settings from a module, object, dict or ``"dotted.path"``; validates at once."""
        self._given.update(config.from_object(obj, namespace))
        self._configure()

    @staticmethod
    def _broker_url(conf: config.Settings) -> str:
        return conf.broker_url or config.default_db_url()

    @property
    def broker_url(self) -> str:
        """The broker URL in effect: the setting, or the embedded SQLite file."""
        return self._broker_url(self.conf)

    @property
    def result_backend_url(self) -> str | None:
        """The backend URL in effect; results default to SQLite only when the broker does too."""
        url = self.conf.result_backend
        if url in ("disabled", ""):
            return None
        if url is None and self.conf.broker_url is None:
            return config.default_db_url()
        return url

    # -- wiring -----------------------------------------------------------------------------------
    def create_transport(self) -> Transport:
        """A new, unconnected transport for this app's broker (each process or loop owns one)."""
        return create_transport(self.broker_url, **self.conf.broker_transport_options)

    @property
    def backend(self) -> Backend | None:
        """The result backend, created on first use; ``None`` when results are disabled."""
        if not self._backend_made:
            with self._lock:
                if not self._backend_made:
                    self._backend = self._create_backend()
                    self._backend_made = True
        return self._backend

    def _create_backend(self) -> Backend | None:
        url = self.result_backend_url
        if url is None:
            return None
        from celeriac.results.registry import backend_class

        cls = backend_class(url)
        extra: dict[str, Any] = {}
        if cls.replies:  # rpc:// replies over the broker unless its URL names a server
            extra = {
                "broker_url": self.broker_url,
                "broker_options": self.conf.broker_transport_options,
            }
        return cls(
            url,
            serializer=self.conf.result_serializer,
            accept=self.conf.result_accept_content or self.conf.accept_content,
            expires=self.conf.result_expires,
            serializers=self.codecs.serializers,
            **extra,
            **self.conf.result_backend_transport_options,
        )

    @property
    def result_writer(self) -> ResultWriter | None:
        """This process's write-behind result writer (see :mod:`celeriac.results.writer`)."""
        if self._writer is None and self.backend is not None:
            with self._lock:
                if self._writer is None:
                    self._writer = ResultWriter(self.backend)
        return self._writer

    def flush_results(self, timeout: float | None = 30.0) -> bool:
        """Wait until every result this process queued is stored; False on timeout."""
        return self._writer.flush(timeout) if self._writer is not None else True

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router.from_settings(self.conf)
        return self._router

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = Producer(self)
        return self._producer

    def queues(self, names: Sequence[str] | None = None) -> list[Queue]:
        """The queues a worker consumes: ``names`` (``-Q``), else every declared queue, else the
        default queue."""
        if names:
            return [self.router.queue(n) for n in names]
        if self.conf.task_queues:
            return list(self.conf.task_queues)
        return [self.router.queue(self.conf.task_default_queue)]

    def close(self) -> None:
        """Close connections this app opened in this process."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._backend is not None:
            self._backend.close()
        self._backend, self._backend_made = None, False

    # -- tasks ------------------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, *, bind: Literal[True], **options: Any) -> BoundTaskDecorator: ...

    @overload
    def task(self, *, bind: Literal[False] = ..., **options: Any) -> TaskDecorator: ...

    def task(self, *args: Any, **options: Any) -> Any:
        """Declare a task: ``@app.task`` or ``@app.task(bind=True, max_retries=5, ...)``.

        An option no core feature or middleware declares fails here, naming it.
        """
        if len(args) > 1 or (args and not callable(args[0])):
            raise TypeError("app.task takes one function, or keyword options only")
        fn: Callable[..., Any] | None = args[0] if args else None
        unknown = sorted(set(options) - set(self.task_options))
        if unknown:
            raise ImproperlyConfigured(
                f"unknown task option(s) {unknown}; known: {', '.join(sorted(self.task_options))}"
            )

        if options.get("rate_limit") is not None:
            try:
                parse_rate(options["rate_limit"])
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"task option 'rate_limit': {exc}") from None

        def decorate(func: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = Task(self, func, options)
            self.register(task)
            return task

        return decorate(fn) if fn is not None else decorate

    def add_component(self, component: type[Component]) -> None:
        """Run ``component`` in every worker of this app; its ``task_options`` become valid."""
        if not (isinstance(component, type) and issubclass(component, Component)):
            raise ImproperlyConfigured(f"{component!r} is not a Component subclass")
        self.task_options.update(component.task_options)
        self.components.append(component)

    @property
    def control(self) -> Control:
        """Remote control of workers: ``app.control.revoke(task_id, terminate=True)``."""
        if self._control is None:
            self._control = Control(self)
        return self._control

    def register(self, task: Task[Any, Any]) -> None:
        existing = self.tasks.get(task.name)
        if existing is not None and existing.fn is not task.fn:
            logger.warning("task %r registered twice; the later one wins", task.name)
        self.tasks[task.name] = task

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> _result.AsyncResult[Any]:
        return _result.AsyncResult(task_id, self.backend, self, task_name)

    def signature(self, name: str, args: Sequence[Any] = (), **kwargs: Any) -> Signature:
        return Signature(name, tuple(args), kwargs, app=self)

    # -- sending ----------------------------------------------------------------------------------
    def plan(
        self,
        name: str,
        task: Task[Any, Any] | None,
        options: Mapping[str, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> SendPlan:
        """What a send of ``name`` with these options needs that does not depend on its
        arguments: route, serializer, flags. ``send_many`` computes it once per batch."""
        task_options = task.options if task is not None else {}
        route_opts = {k: options.get(k) for k in _ROUTE_KEYS}
        for key in _ROUTE_KEYS:
            if route_opts[key] is None and task_options.get(key) is not None:
                route_opts[key] = task_options[key]
        route = self.router.route(name, args, kwargs or {}, route_opts)
        ignore_result = options.get("ignore_result")
        if ignore_result is None:
            ignore_result = task.ignore_result if task is not None else self.conf.task_ignore_result
        priority = route.priority
        return SendPlan(
            route=route,
            serializer=options.get("serializer")
            or task_options.get("serializer")
            or self.conf.task_serializer,
            compression=options.get("compression")
            or task_options.get("compression")
            or self.conf.task_compression,
            embed={
                "callbacks": _signatures(options.get("link")),
                "errbacks": _signatures(options.get("link_error")),
                "chain": _signatures(options.get("chain")),
                "chord": _signature(options.get("chord")),
            },
            ignore_result=bool(ignore_result),
            priority=priority if priority is not None else self.conf.task_default_priority,
            time_limit=(
                options.get("time_limit")
                or (task.option("time_limit", "task_time_limit") if task else None),
                options.get("soft_time_limit")
                or (task.option("soft_time_limit", "task_soft_time_limit") if task else None),
            ),
            task_expires=task_options.get("expires"),
            task=task,
        )

    def prepare(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | str | None = None,
        _task: Task[Any, Any] | None = None,
        _from_retry: bool = False,
        _plan: SendPlan | None = None,
        _now: datetime | None = None,
        **options: Any,
    ) -> tuple[Outgoing, Queue | None]:
        """Build the message for one send and where it goes; no I/O."""
        if _plan is None:
            check_send_options(name, options)
        if _plan is None or not self.router.cacheable:
            # without a cacheable router a callable may look at the arguments: plan each send
            task = _task if _task is not None else self.tasks.get(name)
            if not options and self.router.cacheable:
                # the plain .delay(): its plan depends on the task alone
                _plan = self._plans.get(name)
                if _plan is None or _plan.task is not task:
                    _plan = self._plans[name] = self.plan(name, task, options)
            else:
                _plan = self.plan(name, task, options, args or (), kwargs)
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        now = _now if _now is not None else datetime.now(UTC)
        shared, due_at = self._shared_fields(
            name, _plan, options, countdown, eta, expires, now, _from_retry
        )
        encoded = encode_body(
            args,
            kwargs,
            _plan.embed,
            serializer=_plan.serializer,
            compression=_plan.compression,
            codecs=self.codecs,
        )
        message = task_message(
            task_id=options.get("task_id") or new_id(),
            body=encoded.body,
            content_type=encoded.content_type,
            content_encoding=encoded.content_encoding,
            compression=encoded.compression,
            args_repr=safe_repr(args),
            kwargs_repr=safe_repr(kwargs),
            **shared,
        )
        route = _plan.route
        return Outgoing(message, route.exchange, route.routing_key, due_at), route.queue

    def _shared_fields(
        self,
        name: str,
        plan: SendPlan,
        options: Mapping[str, Any],
        countdown: float | None,
        eta: datetime | None,
        expires: float | datetime | str | None,
        now: datetime,
        from_retry: bool,
    ) -> tuple[dict[str, Any], float | None]:
        """The :func:`task_message` arguments that do not depend on a send's arguments (all
        but id, body and reprs), and the due time: what a batch computes once."""
        if countdown is not None:
            eta = now + timedelta(seconds=float(countdown))
        elif eta is not None and eta.tzinfo is None:
            eta = eta.replace(tzinfo=UTC)
        if expires is None:
            expires = plan.task_expires
        if isinstance(expires, str):  # a retry carries the original message's header on
            expires = parse_time(expires, "expires")
        if isinstance(expires, int | float):
            expires = now + timedelta(seconds=float(expires))
        elif isinstance(expires, datetime) and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        parent = current_request()
        root_id = options.get("root_id") or (parent.root_id if parent is not None else None)
        parent_id = options.get("parent_id") or (parent.id if parent is not None else None)
        if from_retry:
            root_id, parent_id = options.get("root_id"), options.get("parent_id")
        reply_to = options.get("reply_to")
        if reply_to is None and self._replies is not False:
            reply_to = self._default_reply_to(parent, parent_id, plan)
        shared = {
            "task": name,
            "root_id": root_id,
            "parent_id": parent_id,
            "group_id": options.get("group_id"),
            "eta": eta,
            "expires": expires if isinstance(expires, datetime) else None,
            "retries": int(options.get("retries") or 0),
            "time_limit": plan.time_limit,
            "ignore_result": plan.ignore_result,
            "priority": plan.priority,
            "reply_to": reply_to,
            "extra_headers": options.get("headers"),
        }
        return shared, eta.timestamp() if eta is not None else None

    def _default_reply_to(
        self, parent: Request | None, parent_id: str | None, plan: SendPlan
    ) -> str | None:
        """The ``reply_to`` of a send that names none, with a replying backend (``rpc://``):
        a send from a running task (a retry, a subtask) inherits that task's ``reply_to``; one
        the worker makes after a task ran (a chain's next step) gets where its parent's result
        went; any other gets this process's reply queue. So the results of a whole workflow
        reach the process that started it. Also lets that backend refuse, up front, what it
        cannot serve (chords)."""
        backend = self.backend
        if backend is None or not backend.replies:
            self._replies = False
            return None
        self._replies = True
        backend.check_send(plan.embed)
        if parent is not None and parent.reply_to:
            return parent.reply_to
        return backend.reply_to_for(parent_id)

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> _result.AsyncResult[Any]:
        """Send a task by name (it need not be registered here); returns its result handle."""
        item, queue = self.prepare(name, args, kwargs, **options)
        self.producer.send([item], self._queues_to_declare(queue))
        return _result.AsyncResult(item.message.id, self.backend, self, name)

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> _result.AsyncResult[Any]:
        """The async twin of :meth:`send_task`."""
        item, queue = self.prepare(name, args, kwargs, **options)
        await self.producer.asend([item], self._queues_to_declare(queue))
        return _result.AsyncResult(item.message.id, self.backend, self, name)

    def send_many(
        self, calls: Sequence[tuple[str, Sequence[Any], Mapping[str, Any]]], **options: Any
    ) -> list[_result.AsyncResult[Any]]:
        """Send many tasks in one batch publish (the bulk path); same options for all.

        What does not depend on a call's arguments (plan, headers, expiry, parent ids, the
        envelope around them) is built once per task name (:class:`BatchSender`); per call
        only the id, the body and the reprs are.
        """
        check_send_options("send_many", options)
        now = datetime.now(UTC)
        given = options.get("task_id")
        ids = [given] * len(calls) if given else new_ids(len(calls))
        senders: dict[str, BatchSender | None] = {}
        items: list[Outgoing] = []
        queues = {q.name: q for q in self.conf.task_queues or ()}
        for (name, args, kwargs), task_id in zip(calls, ids, strict=True):
            if name in senders:
                sender = senders[name]
            else:
                sender = senders[name] = self._batch_sender(name, options, now)
                if sender is not None and sender.queue is not None:
                    queues.setdefault(sender.queue.name, sender.queue)
            if sender is not None:
                items.append(sender.outgoing(task_id, args, kwargs))
                continue
            item, queue = self.prepare(
                name, args, kwargs, _now=now, **{**options, "task_id": task_id}
            )
            if queue is not None:
                queues.setdefault(queue.name, queue)
            items.append(item)
        self.producer.send(items, list(queues.values()))
        backend = self.backend
        return [
            _result.AsyncResult(task_id, backend, self, name)
            for task_id, (name, _, _) in zip(ids, calls, strict=True)
        ]

    def _batch_sender(
        self, name: str, options: Mapping[str, Any], now: datetime
    ) -> BatchSender | None:
        """What sends of ``name`` in one batch share; ``None`` when each must be prepared alone
        (a callable router may route on the arguments; a header override defeats the template)."""
        if not self.router.cacheable:
            return None
        plan = self.plan(name, self.tasks.get(name), options)
        shared, due_at = self._shared_fields(
            name,
            plan,
            options,
            options.get("countdown"),
            options.get("eta"),
            options.get("expires"),
            now,
            False,
        )
        encoder = BodyEncoder(
            plan.embed, serializer=plan.serializer, compression=plan.compression, codecs=self.codecs
        )

        def make(task_id: str, args_repr: str, kwargs_repr: str, body: bytes) -> Message:
            return task_message(
                task_id=task_id,
                body=body,
                content_type=encoder.content_type,
                content_encoding=encoder.content_encoding,
                compression=encoder.compression,
                args_repr=args_repr,
                kwargs_repr=kwargs_repr,
                **shared,
            )

        template = MessageTemplate.of(make)
        if template is None:
            return None
        route = plan.route
        return BatchSender(
            encoder, template, route.exchange, route.routing_key, due_at, route.queue
        )

    def _queues_to_declare(self, routed: Queue | None) -> list[Queue]:
        """Every queue of ``task_queues`` (so their exchanges and bindings exist before the first
        publish) and the routed one; the producer declares each once per process."""
        queues = list(self.conf.task_queues or ())
        if routed is not None and all(q.name != routed.name for q in queues):
            queues.append(routed)
        return queues

    def __repr__(self) -> str:
        return f"<Celeriac {self.main or '__main__'} broker={redact_url(self.broker_url)}>"


def _signature(value: Any) -> dict[str, Any] | None:
    """A chord body (``chord=`` option) as the dict the message embeds."""
    items = _signatures(value)
    return items[0] if items else None


def _signatures(value: Any) -> list[dict[str, Any]] | None:
    """Normalise ``link=`` / ``link_error=``: one signature, a list of them, or dicts."""
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    result: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Signature):
            result.append(item.to_dict())
        elif isinstance(item, Mapping):
            result.append(Signature.from_dict(item).to_dict())
        elif isinstance(item, Task):
            result.append(item.s().to_dict())
        else:
            raise ImproperlyConfigured(f"link/link_error takes signatures, not {item!r}")
    return result
