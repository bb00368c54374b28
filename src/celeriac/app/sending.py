"""How a send becomes a message: the part of the app that plans, prepares and publishes sends.

``send_task`` -> :meth:`Sending.prepare` (route, serializer, headers, body, the due time) ->
the app's producer. What does not depend on a send's arguments is computed once: per task name
for a plain ``.delay()`` (:class:`SendPlan`, cached), per batch for ``send_many``
(:class:`~celeriac.app.batch.BatchSender`). Celery's ``before_task_publish`` and
``after_task_publish`` signals are sent around each publish when someone listens.

A mixin of :class:`~celeriac.app.base.Celeriac`, apart so that each module keeps one job; it uses
the app's settings, router, backend, producer and task registry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from celeriac import signals
from celeriac.app.batch import BatchSender
from celeriac.canvas.signature import Signature
from celeriac.context import Request, current_request
from celeriac.errors import ImproperlyConfigured
from celeriac.protocol.codec import BodyEncoder, encode_body
from celeriac.protocol.message import Message, new_id, new_ids, parse_time, safe_repr, task_message
from celeriac.protocol.template import MessageTemplate
from celeriac.results import result as _result
from celeriac.routing import Exchange, Queue, Route
from celeriac.task import Task, check_send_options
from celeriac.transports.base import Outgoing

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.app.config import Settings
    from celeriac.app.producer import Producer
    from celeriac.events.sent import SentEventPublisher
    from celeriac.protocol.codec import Codecs
    from celeriac.results.base import Backend
    from celeriac.routing import Router

_ROUTE_KEYS = ("queue", "exchange", "routing_key", "priority")

#: One message to publish: ``(outgoing, its routed queue, args, kwargs)`` (the last two for
#: the publish signals).
Send = tuple[Outgoing, "Queue | None", Sequence[Any] | None, Mapping[str, Any] | None]


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


class Sending:
    """Sending tasks: a mixin of the app (see the module docstring)."""

    #: Publishes ``task-sent`` events when ``task_send_sent_event`` is on (made on first use).
    _sent_events: SentEventPublisher | None = None

    if TYPE_CHECKING:  # what the app provides
        conf: Settings
        codecs: Codecs
        tasks: dict[str, Task[Any, Any]]
        _plans: dict[str, SendPlan]
        _replies: bool | None

        @property
        def router(self) -> Router: ...

        @property
        def producer(self) -> Producer: ...

        @property
        def backend(self) -> Backend | None: ...

    def _as_app(self) -> Celeriac:
        """This mixin is only ever part of an app."""
        return cast("Celeriac", self)

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
        route = self.router.route(name, args, kwargs or {}, route_opts, task=task)
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
            priority=_priority(
                priority if priority is not None else self.conf.task_default_priority
            ),
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
            args_repr=options.get("argsrepr") or safe_repr(args),
            kwargs_repr=options.get("kwargsrepr") or safe_repr(kwargs),
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
            "extra_headers": _headers(options),
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
        self.publish([(item, queue, args, kwargs)])
        return self._result_of(item, name)

    def _before_publish(
        self,
        sends: Sequence[tuple[Outgoing, Sequence[Any] | None, Mapping[str, Any] | None]],
        declare: Sequence[Queue],
    ) -> None:
        """Celery's ``before_task_publish``, per message: a receiver may change ``headers`` (as
        tracing instrumentation does to carry its context), and the message carries the change."""
        policy = self.conf.task_publish_retry_policy
        for item, args, kwargs in sends:
            message = item.message
            signals.before_task_publish.send(
                message.task,
                body=(tuple(args or ()), dict(kwargs or {}), None),
                exchange=item.exchange,
                routing_key=item.routing_key,
                headers=message.headers,
                properties=message.properties,
                declare=list(declare),
                retry_policy=policy,
            )

    def _after_publish(self, items: Sequence[Outgoing]) -> None:
        for item in items:
            message = item.message
            signals.after_task_publish.send(
                message.task,
                body=message.body,
                exchange=item.exchange,
                routing_key=item.routing_key,
                headers=message.headers,
            )

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> _result.AsyncResult[Any]:
        """The async twin of :meth:`send_task`."""
        item, queue = self.prepare(name, args, kwargs, **options)
        await self.apublish([(item, queue, args, kwargs)])
        return self._result_of(item, name)

    def publish(self, sends: Sequence[Send]) -> None:
        """Publish messages built by :meth:`prepare` in one batch: each ``(outgoing, routed
        queue, args, kwargs)``; what their queues and exchanges need is declared first, and the
        publish signals are sent around it when someone listens."""
        items, declare, exchanges, watched = self._publishing(sends)
        self.producer.send(items, declare, exchanges)
        if watched:
            self._after_publish(items)
        if self.conf.task_send_sent_event:
            self._sent_publisher().publish(_sent(sends))

    async def apublish(self, sends: Sequence[Send]) -> None:
        """The async twin of :meth:`publish`, on the running loop (beat sends a due minute so)."""
        items, declare, exchanges, watched = self._publishing(sends)
        await self.producer.asend(items, declare, exchanges)
        if watched:
            self._after_publish(items)
        if self.conf.task_send_sent_event:
            await self._sent_publisher().apublish(_sent(sends))

    def _sent_publisher(self) -> SentEventPublisher:
        """This process's ``task-sent`` publisher (a forked child makes its own)."""
        publisher = self._sent_events
        if publisher is None or publisher.pid != os.getpid():
            from celeriac.events.sent import SentEventPublisher  # only with the setting on

            app = self._as_app()
            publisher = SentEventPublisher(app.create_transport, self.conf.event_exchange)
            self._sent_events = publisher
        return publisher

    def close_sent_events(self) -> None:
        """Close the ``task-sent`` publisher, if one was made (the app's ``close`` calls it)."""
        publisher, self._sent_events = self._sent_events, None
        if publisher is not None and publisher.pid == os.getpid():
            publisher.close()

    def _publishing(
        self, sends: Sequence[Send]
    ) -> tuple[list[Outgoing], list[Queue], list[Exchange], bool]:
        """What :meth:`publish` and :meth:`apublish` do before the publish itself."""
        routed = {queue.name: queue for _, queue, _, _ in sends if queue is not None}
        declare, exchanges = self.router.declarations(*routed.values())
        items = [item for item, _, _, _ in sends]
        watched = publish_signals_connected()
        if watched:
            self._before_publish([(item, args, kwargs) for item, _, args, kwargs in sends], declare)
        return items, declare, exchanges, watched

    def _result_of(self, item: Outgoing, name: str) -> _result.AsyncResult[Any]:
        """The handle on a sent task; ``ignored`` when the message asks for no result."""
        return _result.AsyncResult(
            item.message.id,
            self.backend,
            name,
            self._as_app(),
            ignored=bool(item.message.headers.get("ignore_result")),
        )

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
        sends: list[Send] = []
        watched = publish_signals_connected()
        for (name, args, kwargs), task_id in zip(calls, ids, strict=True):
            if watched:  # each message its own headers, for receivers that change them
                senders[name] = None
            if name in senders:
                sender = senders[name]
            else:
                sender = senders[name] = self._batch_sender(name, options, now)
            if sender is not None:
                sends.append((sender.outgoing(task_id, args, kwargs), sender.queue, args, kwargs))
                continue
            item, queue = self.prepare(
                name, args, kwargs, _now=now, **{**options, "task_id": task_id}
            )
            sends.append((item, queue, args, kwargs))
        self.publish(sends)
        backend, app = self.backend, self._as_app()
        return [
            _result.AsyncResult(task_id, backend, name, app)
            for task_id, (name, _, _) in zip(ids, calls, strict=True)
        ]

    def _batch_sender(
        self, name: str, options: Mapping[str, Any], now: datetime
    ) -> BatchSender | None:
        """What sends of ``name`` in one batch share; ``None`` when each must be prepared alone
        (a callable router may route on the arguments; a header override defeats the template)."""
        if not self.router.cacheable or "argsrepr" in options or "kwargsrepr" in options:
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


def _sent(sends: Sequence[Send]) -> list[tuple[Outgoing, str | None]]:
    """Each message and the name of the queue it was routed to (for ``task-sent``)."""
    return [(item, queue.name if queue is not None else None) for item, queue, _, _ in sends]


def _priority(value: Any) -> int | None:
    """A send's priority within 0-9 (celeriac's range on every broker): a larger one, as Celery
    users write for RabbitMQ's 0-255, is 9; a negative one is 0. Not a number: refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ImproperlyConfigured(f"priority must be a number from 0 to 9, not {value!r}")
    return max(0, min(9, int(value)))


def _headers(options: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The message headers a send adds: ``headers=`` (visible on the worker as
    ``self.request.<name>``) and ``shadow=`` (the name logs and monitors show)."""
    headers: Mapping[str, Any] | None = options.get("headers")
    shadow = options.get("shadow")
    if shadow:
        headers = {**(headers or {}), "shadow": shadow}
    return headers


def publish_signals_connected() -> bool:
    """Whether anyone listens to ``before_task_publish``/``after_task_publish`` (a send
    builds their arguments only then)."""
    return signals.before_task_publish.has_receivers() or signals.after_task_publish.has_receivers()


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
