"""Exchanges, queues, bindings and the routers that pick a task's destination.

Two layers, kept apart:

* **Topology** (``Exchange``, ``Queue``, ``Binding``, :func:`route`): AMQP 0-9-1's model. A message
  is published to an exchange with a routing key; the exchange's bindings decide which queues get a
  copy: zero, one or many. Direct, topic and fanout exchanges look at the routing key; headers
  exchanges at the message's headers (:func:`headers_match`). Transports without native exchanges
  (memory, SQLite, Redis) call :func:`route` over the bindings they store; AMQP lets RabbitMQ do it.
* **Task routing** (:class:`Router`): which exchange and routing key a *task* is sent with, from
  ``task_routes`` (a dict of names or globs, ``re.compile`` patterns, or callables), the task's own
  options and the defaults. Like Celery, the first router that answers wins.

The default exchange ``""`` is AMQP's: a direct exchange to which every queue is bound by its own
name, so ``routing_key="q"`` reaches queue ``q`` with no declaration of bindings at all.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal

from celeriac.errors import ImproperlyConfigured

ExchangeType = Literal["direct", "topic", "fanout", "headers"]
EXCHANGE_TYPES: frozenset[str] = frozenset({"direct", "topic", "fanout", "headers"})
DEFAULT_EXCHANGE = ""
#: The ``x-match`` values RabbitMQ accepts on a headers binding (it refuses a binding with any
#: other); ``all`` when absent. The ``-with-x`` ones also compare ``x-`` arguments.
X_MATCH_VALUES: frozenset[str] = frozenset({"all", "any", "all-with-x", "any-with-x"})


@dataclass(frozen=True, slots=True)
class Exchange:
    """A named router of messages. ``type`` is direct, topic, fanout or headers."""

    name: str
    type: ExchangeType = "direct"
    durable: bool = True

    def __post_init__(self) -> None:
        if self.type not in EXCHANGE_TYPES:
            raise ImproperlyConfigured(
                f"exchange {self.name!r}: type must be one of {sorted(EXCHANGE_TYPES)}, "
                f"not {self.type!r}"
            )


@dataclass(frozen=True, slots=True, eq=False)
class Binding:
    """Messages published to ``exchange`` whose key matches ``routing_key`` go to ``queue``.

    ``arguments`` are AMQP's binding arguments. On a headers exchange they are what a message's
    headers must hold: ``{"x-match": "any", "kind": "pdf", "lang": "en"}`` (see
    :func:`headers_match`); other exchange types ignore them. They must be JSON values (the SQLite
    and Redis brokers store them as JSON, and message headers are JSON on every broker), and two
    bindings differing only in them are two bindings, as in RabbitMQ. Equality compares argument
    values by type as well (``1`` is not ``True``), like the matching does.
    """

    exchange: str
    queue: str
    routing_key: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arguments = dict(self.arguments)
        for key, value in arguments.items():
            if not isinstance(key, str):
                raise ImproperlyConfigured(
                    f"binding of {self.queue!r} to {self.exchange!r}: argument names must be "
                    f"strings, not {key!r}"
                )
            _check_json(value, f"binding of {self.queue!r} to {self.exchange!r}: argument {key!r}")
        x_match = arguments.get("x-match", "all")
        if not isinstance(x_match, str) or x_match not in X_MATCH_VALUES:
            raise ImproperlyConfigured(
                f"binding of {self.queue!r} to {self.exchange!r}: x-match must be one of "
                f"{sorted(X_MATCH_VALUES)}, not {x_match!r}"
            )
        # a private copy: a caller changing its dict later must not change a stored binding
        object.__setattr__(self, "arguments", arguments)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Binding):
            return NotImplemented
        return (self.exchange, self.queue, self.routing_key) == (
            other.exchange,
            other.queue,
            other.routing_key,
        ) and _typed(self.arguments) == _typed(other.arguments)

    def __hash__(self) -> int:
        # arguments are left out (dicts do not hash); bindings equal by __eq__ still hash alike
        return hash((self.exchange, self.queue, self.routing_key))


def _check_json(value: Any, what: str) -> None:
    """Refuse what JSON cannot carry: it could match no header, and could not be stored."""
    if isinstance(value, list | tuple):
        items: Iterable[Any] = value
    elif isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        items = value.values()
    elif (
        value is None
        or isinstance(value, str | int)
        or (isinstance(value, float) and math.isfinite(value))
    ):
        return
    else:
        raise ImproperlyConfigured(f"{what} is not a JSON value: {value!r}")
    for item in items:
        _check_json(item, what)


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue and the bindings that feed it.

    ``Queue("io")`` is reachable through the default exchange as routing key ``io``.
    ``Queue("eu", exchange=Exchange("orders", "topic"), routing_key="orders.eu.*")`` is also bound
    to ``orders``; ``bindings`` adds more (a queue fed by several keys or exchanges).
    ``max_priority`` is the highest priority honoured (0-9); ``auto_delete`` queues are removed
    when their consumer closes (broadcast queues use it).

    ``binding_arguments`` are the arguments of the queue's own binding, as in kombu: on a headers
    exchange, ``Queue("pdf", exchange=Exchange("by-kind", "headers"),
    binding_arguments={"kind": "pdf"})``. A headers binding without arguments matches *every*
    message (AMQP's rule), so when ``bindings`` already binds the queue to its own headers
    exchange and ``binding_arguments`` is empty, that argument-less binding is not made:
    ``exchange=`` then only declares the exchange the bindings need.
    """

    name: str
    exchange: Exchange | None = None
    routing_key: str | None = None
    bindings: tuple[Binding, ...] = ()
    durable: bool = True
    auto_delete: bool = False
    max_priority: int = 9
    arguments: Mapping[str, Any] = field(default_factory=dict)
    binding_arguments: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ImproperlyConfigured("a queue needs a non-empty name")
        if not 0 <= self.max_priority <= 9:
            raise ImproperlyConfigured(
                f"queue {self.name!r}: max_priority must be within 0-9, not {self.max_priority}"
            )

    def all_bindings(self) -> tuple[Binding, ...]:
        """Every binding of this queue, the one from ``exchange``/``routing_key`` first."""
        extra = tuple(b for b in self.bindings if b.queue == self.name)
        exchange = self.exchange
        if exchange is None or exchange.name == DEFAULT_EXCHANGE:
            return extra
        if (
            exchange.type == "headers"
            and not self.binding_arguments
            and any(b.exchange == exchange.name for b in extra)
        ):
            return extra  # no match-everything binding beside the ones that say what to match
        key = self.routing_key if self.routing_key is not None else self.name
        return (Binding(exchange.name, self.name, key, self.binding_arguments), *extra)

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


def _typed(value: Any) -> Any:
    """``value`` with the type of every scalar made part of it, for type-sensitive equality.

    AMQP tables carry types, and RabbitMQ compares a binding's value with a header's exactly
    (Erlang's ``=:=``): ``1`` matches neither ``1.0``, nor ``True``, nor ``"1"``. Python's ``==``
    would say ``1 == 1.0 == True``. Lists and tuples are both AMQP arrays; keys of a table are
    compared in sorted order, as a table has no order.
    """
    if value is None:
        return ("void",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list | tuple):
        return ("array", tuple(_typed(item) for item in value))
    if isinstance(value, Mapping):
        items = sorted(((str(k), _typed(v)) for k, v in value.items()), key=itemgetter(0))
        return ("table", tuple(items))
    return ("other", type(value).__name__, value)


_MISSING = object()


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """True when a message with ``headers`` matches a headers-exchange binding's ``arguments``.

    RabbitMQ's rules (``rabbit_exchange_type_headers``, 3.13 and later):

    * ``x-match`` is ``all`` (the default: every argument must match, so a binding with no other
      argument matches every message) or ``any`` (one must, so with none nothing matches);
    * arguments named ``x-...`` are ignored unless ``x-match`` is ``all-with-x`` or
      ``any-with-x``; ``x-match`` itself always is;
    * an argument matches when the header of its name is present with an equal value of the same
      type (see :func:`_typed`); one whose value is ``None`` (AMQP's *void*) matches when the
      header is present at all, whatever its value.

    RabbitMQ before 3.13 compared numbers by value (``1`` matched ``1.0``); celeriac follows the
    current rule.
    """
    mode = arguments.get("x-match", "all")
    with_x = mode in ("all-with-x", "any-with-x")
    want_all = mode in ("all", "all-with-x")
    for name, expected in arguments.items():
        if name == "x-match" or (not with_x and name.startswith("x-")):
            continue
        found = headers.get(name, _MISSING)
        hit = found is not _MISSING and (expected is None or _typed(expected) == _typed(found))
        if hit != want_all:  # a miss decides "all", a hit decides "any"
            return hit
    return want_all


def route(
    exchange_type: str,
    bindings: Iterable[Binding],
    routing_key: str,
    headers: Mapping[str, Any] | None = None,
) -> list[str]:
    """The queues a message published with ``routing_key`` reaches, each once, in binding order.

    ``headers`` are the message's headers: only a headers exchange reads them (and ignores the
    routing key, as RabbitMQ does).
    """
    seen: dict[str, None] = {}
    for binding in bindings:
        if exchange_type == "fanout":
            hit = True
        elif exchange_type == "topic":
            hit = topic_matches(binding.routing_key, routing_key)
        elif exchange_type == "headers":
            hit = headers_match(binding.arguments, headers or {})
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

    @classmethod
    def from_settings(cls, conf: Any) -> Router:
        """The router an app's settings describe (``task_routes``, ``task_queues``,
        ``task_default_queue``, ``task_create_missing_queues``); a bad one fails naming the
        setting. ``conf`` is the app's settings object (typed loosely: routing sits below the
        app's settings module)."""
        queues = {q.name: q for q in conf.task_queues or ()}
        return cls(
            conf.task_routes,
            queues,
            conf.task_default_queue,
            conf.task_create_missing_queues,
        )

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
    "headers_match",
    "route",
    "topic_matches",
]
