"""Which exchange, routing key and queue a task is sent with: Celery's routing rules.

For one send, in order (Celery 5.7's ``Router.route`` then ``send_task_message``):

1. the routers of ``task_routes`` are asked in order; the first answer that is not ``None`` is
   the route (:mod:`celeriac.routing.routes`);
2. the send's own routing options (``apply_async(queue=..., exchange=..., routing_key=...,
   priority=...)``, then the task's options) win over the route key by key; naming an exchange
   without a queue drops the route's queue (the exchange decides where the message goes);
3. no queue and no exchange: the default queue (``task_default_queue``);
4. where it goes: an explicit exchange gets the message with the given key (else the queue's
   own); otherwise the queue's exchange decides. A queue on AMQP's default exchange is reached by
   its name; one on a direct exchange by its own binding key (a ``routing_key`` given without an
   exchange does not change that, as in Celery); one on a topic, fanout or headers exchange gets
   the given routing key, else its own.

A queue is named by its name or its alias (a :class:`~celeriac.routing.entities.Broadcast`
queue by its exchange's name). A name that is not in ``task_queues`` is created
(``task_create_missing_queues``, with ``task_create_missing_queue_exchange_type``) or refused.
``task_default_exchange`` (of ``task_default_exchange_type``) and ``task_default_routing_key``
fill in the queues of ``task_queues`` that name no exchange or key, as Celery's ``Queues`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from celeriac.errors import ImproperlyConfigured, QueueNotFound
from celeriac.routing.entities import (
    DEFAULT_EXCHANGE,
    EXCHANGE_TYPES,
    Exchange,
    ExchangeType,
    Queue,
    evolve,
    is_broadcast,
)
from celeriac.routing.foreign import as_queue, exchange_name, is_queue_like, queues_setting
from celeriac.routing.routes import RouterFn, check_answer, is_static, prepare_routes

_ROUTE_OPTIONS = ("queue", "exchange", "routing_key", "priority")
#: Distinct (name, options) answers kept per router; past it the cache starts over (a routing
#: key chosen per send, say per user, must not grow it without bound).
_CACHE_LIMIT = 4096

RoutesSetting = Any


@dataclass(frozen=True, slots=True)
class Route:
    """Where one task goes: the exchange and routing key to publish with, and its queue, if any."""

    exchange: str
    routing_key: str
    queue: Queue | None = None
    priority: int | None = None


def _exchange_type(value: Any, setting: str) -> ExchangeType:
    if value not in EXCHANGE_TYPES:
        raise ImproperlyConfigured(
            f"setting {setting!r} must be one of {', '.join(sorted(EXCHANGE_TYPES))}, not {value!r}"
        )
    return cast(ExchangeType, value)


class Router:
    """Turns a task name and its send options into a :class:`Route` (see the module's rules)."""

    def __init__(
        self,
        routes: RoutesSetting,
        queues: Mapping[str, Any] | Iterable[Any] | None,
        default_queue: str,
        create_missing: bool = True,
        *,
        default_exchange: Exchange | None = None,
        default_routing_key: str | None = None,
        missing_exchange_type: ExchangeType | None = None,
        queue_max_priority: int | None = None,
    ) -> None:
        self._queue_max_priority = queue_max_priority
        self._default_exchange = default_exchange
        self._default_routing_key = default_routing_key or None
        self._default_queue = default_queue
        self._create_missing = create_missing
        self._missing_exchange_type = missing_exchange_type
        #: The queues of ``task_queues``, kombu's made celeriac's, the defaults filled in.
        self.queues: tuple[Queue, ...] = tuple(
            self._with_defaults(q) for q in queues_setting(queues)
        )
        self._by_name = {q.name: q for q in self.queues}
        self._by_alias = {q.alias: q for q in self.queues if q.alias}
        self._created: dict[str, Queue] = {}
        self._routers: list[RouterFn] = prepare_routes(routes)
        #: True when every router is a dict (routes depend only on name and options): the app
        #: may plan a task's sends once.
        self.cacheable = all(is_static(r) for r in self._routers)
        self._cache: dict[tuple[Any, ...], Route] = {}

    @classmethod
    def from_settings(cls, conf: Any) -> Router:
        """The router an app's settings describe (``task_routes``, ``task_queues``,
        ``task_default_queue``, ``task_default_exchange``, ``task_default_exchange_type``,
        ``task_default_routing_key``, ``task_queue_max_priority``, ``task_create_missing_queues``,
        ``task_create_missing_queue_exchange_type``); a bad one fails naming the setting.
        ``conf`` is the app's settings object (typed loosely: routing sits below the app's
        settings module; a setting it lacks takes Celery's default)."""
        kind = _exchange_type(
            getattr(conf, "task_default_exchange_type", None) or "direct",
            "task_default_exchange_type",
        )
        missing_type = getattr(conf, "task_create_missing_queue_exchange_type", None)
        missing = (
            None
            if missing_type is None
            else _exchange_type(missing_type, "task_create_missing_queue_exchange_type")
        )
        levels = getattr(conf, "task_queue_max_priority", None)
        if levels is not None and (
            not isinstance(levels, int) or isinstance(levels, bool) or not 0 <= levels <= 255
        ):
            raise ImproperlyConfigured(
                f"setting 'task_queue_max_priority' must be an integer within 0-255, not {levels!r}"
            )
        name = conf.task_default_exchange
        return cls(
            conf.task_routes,
            conf.task_queues,
            conf.task_default_queue,
            conf.task_create_missing_queues,
            default_exchange=Exchange(name, kind) if name else None,
            default_routing_key=conf.task_default_routing_key,
            missing_exchange_type=missing,
            queue_max_priority=levels,
        )

    def _with_defaults(self, queue: Queue) -> Queue:
        """What Celery's ``Queues`` fills in on a queue that does not say:
        ``task_default_exchange`` when it names no exchange, ``task_default_routing_key`` when
        it has no key, ``task_queue_max_priority`` as its ``x-max-priority``."""
        changes: dict[str, Any] = {}
        if queue.exchange is None and self._default_exchange is not None:
            changes["exchange"] = self._default_exchange
        if not queue.routing_key and self._default_routing_key:
            changes["routing_key"] = self._default_routing_key
        levels = self._queue_max_priority
        if levels is not None and "x-max-priority" not in queue.arguments:
            changes["arguments"] = {**queue.arguments, "x-max-priority": levels}
        return evolve(queue, **changes) if changes else queue

    def _with_levels(self, queue: Queue) -> Queue:
        """A created queue gets ``task_queue_max_priority`` too (Celery's ``Queues`` sets it on
        every queue it adds), but not the default exchange: it has its own, or AMQP's."""
        levels = self._queue_max_priority
        if levels is None or "x-max-priority" in queue.arguments:
            return queue
        return evolve(queue, arguments={**queue.arguments, "x-max-priority": levels})

    # -- queues -------------------------------------------------------------------------------
    def queue(self, name: str) -> Queue:
        """The queue a route names: declared (by alias, then name, as Celery looks), the default
        queue, or one created when ``task_create_missing_queues`` is on."""
        found = self._by_alias.get(name) or self._by_name.get(name) or self._created.get(name)
        if found is not None:
            return found
        if name == self._default_queue and not self.queues:
            # no task_queues at all: the default queue is what they are, as in Celery
            queue = self._with_defaults(Queue(name))
        elif not self._create_missing:
            raise QueueNotFound(
                f"queue {name!r} is not in task_queues and task_create_missing_queues is off"
            )
        elif self._missing_exchange_type is not None:
            exchange = Exchange(name, self._missing_exchange_type)
            queue = self._with_levels(Queue(name, exchange=exchange, routing_key=name))
        else:
            queue = self._with_levels(Queue(name))
        return self._created.setdefault(name, queue)

    def worker_queues(self, names: Sequence[str] | None = None) -> list[Queue]:
        """The queues a worker consumes: ``names`` (``-Q``, names or aliases), else every queue
        of ``task_queues``, else the default queue."""
        if names:
            return [self.queue(n) for n in names]
        if self.queues:
            return list(self.queues)
        return [self.queue(self._default_queue)]

    def declarations(self, *routed: Queue | None) -> tuple[list[Queue], list[Exchange]]:
        """What a producer declares before it publishes: every queue of ``task_queues`` and the
        ``routed`` ones (each :attr:`Route.queue` of the sends), but of a broadcast queue only
        its exchange: the queue is each consumer's own (a producer declaring one would collect a
        copy of every message for nobody), as Celery does not declare ``Broadcast`` queues."""
        queues: list[Queue] = []
        exchanges: dict[str, Exchange] = {}
        seen: set[str] = set()
        for queue in (*self.queues, *routed):
            if queue is None or queue.name in seen:
                continue
            seen.add(queue.name)
            if not is_broadcast(queue):
                queues.append(queue)
            else:
                for exchange in queue.exchanges():
                    exchanges.setdefault(exchange.name, exchange)
        return queues, list(exchanges.values())

    # -- routing ------------------------------------------------------------------------------
    def route(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        task: Any = None,
    ) -> Route:
        """The route for one send. ``task`` is the task object, given to Celery-style routers.

        When every router is a dict (none could look at the arguments), the answer depends only
        on the name and the routing options, so it is computed once and cached: the common
        ``.delay()`` pays a dict lookup, not a walk over patterns.
        """
        if self.cacheable:
            key = (name, *((options or {}).get(k) for k in _ROUTE_OPTIONS))
            try:
                cached = self._cache.get(key)
            except TypeError:  # an unhashable option (a Queue with arguments): no cache
                return self._route(name, args, kwargs, options, task)
            if cached is None:
                cached = self._route(name, args, kwargs, options, task)
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[key] = cached
            return cached
        return self._route(name, args, kwargs, options, task)

    def _route(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
        task: Any,
    ) -> Route:
        opts = dict(options or {})
        spec: dict[str, Any] = {}
        for router in self._routers:
            answer = router(name, args, kwargs or {}, opts, task)
            if answer is None:
                continue
            check_answer(answer, f"the answer of a router for {name!r}")
            if isinstance(answer, Mapping):
                spec = dict(answer)
            elif not (isinstance(answer, str) and not answer):
                spec = {"queue": answer}  # an empty name, like {}, ends the search: defaults
            break
        explicit = {k: opts[k] for k in _ROUTE_OPTIONS if opts.get(k) is not None}
        if explicit.get("exchange") is not None and "queue" not in explicit:
            spec.pop("queue", None)  # the exchange named for this send decides
        spec.update(explicit)
        return self._resolve(spec)

    def _destination(self, value: Any) -> Queue | None:
        if value is None or (isinstance(value, str) and not value):
            return None
        if isinstance(value, str):
            return self.queue(value)
        if is_queue_like(value):
            return as_queue(value, "task_routes")
        raise ImproperlyConfigured(f"a route's queue must be a name or a Queue, not {value!r}")

    def _resolve(self, spec: Mapping[str, Any]) -> Route:
        queue = self._destination(spec.get("queue"))
        exchange = exchange_name(spec.get("exchange"))
        key = spec.get("routing_key")
        if queue is None and exchange is None:
            queue = self.queue(self._default_queue)
        if exchange is None:
            assert queue is not None
            own = queue.routing_key if queue.routing_key is not None else queue.name
            target = queue.exchange
            if target is None or target.name == DEFAULT_EXCHANGE:
                exchange, key = DEFAULT_EXCHANGE, queue.name
            elif target.type == "direct":
                exchange, key = target.name, own
            else:
                exchange, key = target.name, own if key is None else key
        elif key is None:
            if queue is None:
                key = ""
            else:
                key = queue.routing_key if queue.routing_key is not None else queue.name
        priority = spec.get("priority")
        return Route(
            exchange=exchange,
            routing_key=str(key),
            queue=queue,
            priority=int(priority) if priority is not None else None,
        )


__all__ = ["Route", "Router", "RoutesSetting"]
