"""Exchanges, queues, bindings and the routers that pick a task's destination.

Two layers, kept apart:

* **Topology** (``Exchange``, ``Queue``, ``Binding``, :func:`route`): AMQP 0-9-1's model. A message
  is published to an exchange with a routing key; the exchange's bindings decide which queues get a
  copy: zero, one or many. Transports without native exchanges (memory, SQLite, Redis) call
  :func:`route` over the bindings they store; AMQP lets RabbitMQ do it.
* **Task routing** (:class:`Router`): which exchange and routing key a *task* is sent with, from
  ``task_routes`` (a dict of names or globs, ``re.compile`` patterns, or callables), the task's own
  options and the defaults. Like Celery, the first router that answers wins.

The default exchange ``""`` is AMQP's: a direct exchange to which every queue is bound by its own
name, so ``routing_key="q"`` reaches queue ``q`` with no declaration of bindings at all.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from celeriac.errors import ImproperlyConfigured

ExchangeType = Literal["direct", "topic", "fanout"]
EXCHANGE_TYPES: frozenset[str] = frozenset({"direct", "topic", "fanout"})
DEFAULT_EXCHANGE = ""


@dataclass(frozen=True, slots=True)
class Exchange:
    """A named router of messages. ``type`` is direct, topic or fanout."""

    name: str
    type: ExchangeType = "direct"
    durable: bool = True

    def __post_init__(self) -> None:
        if self.type not in EXCHANGE_TYPES:
            raise ImproperlyConfigured(
                f"exchange {self.name!r}: type must be one of {sorted(EXCHANGE_TYPES)}, "
                f"not {self.type!r}"
            )


@dataclass(frozen=True, slots=True)
class Binding:
    """Messages published to ``exchange`` whose key matches ``routing_key`` go to ``queue``."""

    exchange: str
    queue: str
    routing_key: str = ""


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue and the bindings that feed it.

    ``Queue("io")`` is reachable through the default exchange as routing key ``io``.
    ``Queue("eu", exchange=Exchange("orders", "topic"), routing_key="orders.eu.*")`` is also bound
    to ``orders``; ``bindings`` adds more (a queue fed by several keys or exchanges).
    ``max_priority`` is the highest priority honoured (0-9); ``auto_delete`` queues are removed
    when their consumer closes (broadcast queues use it).
    """

    name: str
    exchange: Exchange | None = None
    routing_key: str | None = None
    bindings: tuple[Binding, ...] = ()
    durable: bool = True
    auto_delete: bool = False
    max_priority: int = 9
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ImproperlyConfigured("a queue needs a non-empty name")
        if not 0 <= self.max_priority <= 9:
            raise ImproperlyConfigured(
                f"queue {self.name!r}: max_priority must be within 0-9, not {self.max_priority}"
            )

    def all_bindings(self) -> tuple[Binding, ...]:
        """Every binding of this queue, the one from ``exchange``/``routing_key`` first."""
        own: tuple[Binding, ...] = ()
        if self.exchange is not None and self.exchange.name != DEFAULT_EXCHANGE:
            key = self.routing_key if self.routing_key is not None else self.name
            own = (Binding(self.exchange.name, self.name, key),)
        return own + tuple(b for b in self.bindings if b.queue == self.name)

    def exchanges(self) -> tuple[Exchange, ...]:
        """The exchanges this queue's own binding needs declared."""
        if self.exchange is not None and self.exchange.name != DEFAULT_EXCHANGE:
            return (self.exchange,)
        return ()


def _words(text: str) -> tuple[str, ...]:
    """Split a routing key or pattern into words; the empty key has no words at all."""
    return tuple(text.split(".")) if text else ()


@lru_cache(maxsize=8192)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """True when ``routing_key`` matches the AMQP topic ``pattern`` (``*`` one word, ``#`` any).

    A dynamic programme over the key's word positions, one pattern word at a time: ``reachable[j]``
    says the pattern words seen so far can consume exactly the first ``j`` words of the key. ``#``
    may swallow zero or more words, so it spreads reachability forward. Iterative on purpose: a
    recursive matcher overflows the stack on keys of a few thousand words, which the transports
    without AMQP's 255-byte key limit (memory, SQLite, Redis) would let through.
    """
    if "*" not in pattern and "#" not in pattern:
        return pattern == routing_key
    pat, key = _words(pattern), _words(routing_key)
    reachable = [True] + [False] * len(key)
    for word in pat:
        if word == "#":
            for j in range(1, len(key) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            reachable = [False] + [
                reachable[j] and (word == "*" or word == key[j]) for j in range(len(key))
            ]
            if not any(reachable):
                return False
    return reachable[len(key)]


def route(
    exchange_type: str,
    bindings: Iterable[Binding],
    routing_key: str,
) -> list[str]:
    """The queues a message published with ``routing_key`` reaches, each once, in binding order."""
    seen: dict[str, None] = {}
    for binding in bindings:
        if exchange_type == "fanout":
            hit = True
        elif exchange_type == "topic":
            hit = topic_matches(binding.routing_key, routing_key)
        else:
            hit = binding.routing_key == routing_key
        if hit:
            seen.setdefault(binding.queue, None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one task goes: the exchange and routing key to publish with, and its queue, if any."""

    exchange: str
    routing_key: str
    queue: Queue | None = None
    priority: int | None = None


_ROUTE_OPTIONS = ("queue", "exchange", "routing_key", "priority")

RouteSpec = Mapping[str, Any]
RouterFn = Callable[..., RouteSpec | str | None]
RoutesSetting = Mapping[str, Any] | Sequence[Any] | RouterFn | None


class Router:
    """Turns a task name and its options into a :class:`Route`, the way Celery's ``task_routes`` do.

    ``task_routes`` may be a dict (exact names, glob patterns such as ``"shop.email.*"`` or
    ``re.compile`` patterns as keys; a queue name or a dict of ``queue``/``exchange``/
    ``routing_key``/``priority`` as values), a callable ``(name, args, kwargs, options) -> spec``,
    or a list of either, tried in order.
    """

    def __init__(
        self,
        routes: RoutesSetting,
        queues: Mapping[str, Queue],
        default_queue: str,
        create_missing: bool = True,
    ) -> None:
        self._queues = dict(queues)
        self._default_queue = default_queue
        self._create_missing = create_missing
        flat = self._flatten(routes)
        self._routers: list[RouterFn] = [self._as_router(r) for r in flat]
        self._cacheable = all(isinstance(r, Mapping) for r in flat)
        #: True when no router is a callable (routes depend only on name and options).
        self.cacheable = self._cacheable
        self._cache: dict[tuple[Any, ...], Route] = {}

    @staticmethod
    def _flatten(routes: RoutesSetting) -> list[Any]:
        if routes is None:
            return []
        if isinstance(routes, Mapping) or callable(routes):
            return [routes]
        return list(routes)

    @staticmethod
    def _as_router(spec: Any) -> RouterFn:
        if callable(spec) and not isinstance(spec, Mapping):
            return spec  # type: ignore[no-any-return]
        if not isinstance(spec, Mapping):
            raise ImproperlyConfigured(
                f"task_routes: each router must be a dict or a callable, not {type(spec).__name__}"
            )
        exact: dict[str, Any] = {}
        patterns: list[tuple[re.Pattern[str], Any]] = []
        for key, value in spec.items():
            if isinstance(key, re.Pattern):
                patterns.append((key, value))
            elif isinstance(key, str) and any(c in key for c in "*?["):
                patterns.append((re.compile(fnmatch.translate(key)), value))
            elif isinstance(key, str):
                exact[key] = value
            else:
                raise ImproperlyConfigured(f"task_routes: a key must be a str or a regex: {key!r}")

        def dict_router(name: str, *_: Any, **__: Any) -> Any:
            if name in exact:
                return exact[name]
            for regex, value in patterns:
                if regex.match(name):
                    return value
            return None

        return dict_router

    def queue(self, name: str) -> Queue:
        """The declared queue of that name, or a plain one when ``task_create_missing_queues``."""
        found = self._queues.get(name)
        if found is not None:
            return found
        if not self._create_missing:
            raise ImproperlyConfigured(
                f"queue {name!r} is not in task_queues and task_create_missing_queues is off"
            )
        return Queue(name)

    def route(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Route:
        """The route for one send: explicit send options beat ``task_routes``, then defaults.

        When every router is a dict (no callable that could look at the arguments), the answer
        depends only on the name and the routing options, so it is computed once and cached:
        the common ``.delay()`` pays a dict lookup, not a walk over patterns.
        """
        if self._cacheable:
            key = (name, *((options or {}).get(k) for k in _ROUTE_OPTIONS))
            try:
                cached = self._cache.get(key)
            except TypeError:  # an unhashable option (a Queue with arguments): no cache
                return self._route(name, args, kwargs, options)
            if cached is None:
                cached = self._cache[key] = self._route(name, args, kwargs, options)
            return cached
        return self._route(name, args, kwargs, options)

    def _route(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
    ) -> Route:
        opts = dict(options or {})
        spec: dict[str, Any] = {}
        if not any(opts.get(k) is not None for k in ("queue", "exchange", "routing_key")):
            for router in self._routers:
                answer = router(name, args, kwargs or {}, opts)
                if answer is None:
                    continue
                spec = {"queue": answer} if isinstance(answer, str) else dict(answer)
                break
        for key in ("queue", "exchange", "routing_key", "priority"):
            if opts.get(key) is not None:
                spec[key] = opts[key]
        return self._resolve(spec)

    def _resolve(self, spec: Mapping[str, Any]) -> Route:
        queue_spec = spec.get("queue")
        queue: Queue | None
        if isinstance(queue_spec, Queue):
            queue = queue_spec
        elif queue_spec is not None:
            queue = self.queue(str(queue_spec))
        elif spec.get("exchange") is None and spec.get("routing_key") is None:
            queue = self.queue(self._default_queue)
        else:
            queue = None
        exchange = spec.get("exchange")
        exchange_name = exchange.name if isinstance(exchange, Exchange) else exchange
        routing_key = spec.get("routing_key")
        if queue is not None:
            if exchange_name is None:
                exchange_name = queue.exchange.name if queue.exchange else DEFAULT_EXCHANGE
            if routing_key is None:
                own = queue.all_bindings()
                routing_key = own[0].routing_key if own else queue.name
        priority = spec.get("priority")
        return Route(
            exchange=str(exchange_name or DEFAULT_EXCHANGE),
            routing_key=str(routing_key or ""),
            queue=queue,
            priority=int(priority) if priority is not None else None,
        )


__all__ = [
    "DEFAULT_EXCHANGE",
    "Binding",
    "Exchange",
    "ExchangeType",
    "Queue",
    "Route",
    "Router",
    "route",
    "topic_matches",
]
