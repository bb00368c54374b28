"""AMQP 0-9-1's entities as celeriac declares them: exchanges, bindings, queues, broadcast queues.

They are plain frozen values: a transport declares them (RabbitMQ natively, the other brokers in
:mod:`celeriac.transports.topology`), the router reads them. Field names follow kombu's where
kombu has one (``routing_key``, ``binding_arguments``, ``auto_delete``, ``exclusive``,
``no_declare``, ``alias``), so that :mod:`celeriac.routing.foreign` can carry a kombu object over
attribute by attribute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Any, Literal

from celeriac.errors import ImproperlyConfigured

ExchangeType = Literal["direct", "topic", "fanout", "headers"]
EXCHANGE_TYPES: frozenset[str] = frozenset({"direct", "topic", "fanout", "headers"})
DEFAULT_EXCHANGE = ""
#: The ``x-match`` values RabbitMQ accepts on a headers binding (it refuses a binding with any
#: other); ``all`` when absent. The ``-with-x`` ones also compare ``x-`` arguments.
X_MATCH_VALUES: frozenset[str] = frozenset({"all", "any", "all-with-x", "any-with-x"})
#: The highest priority celeriac gives a message (AMQP's 0-9 scale: RabbitMQ allows up to 255
#: levels, but each one costs it an internal queue, and nine cover every use we know of).
MAX_PRIORITY = 9
#: RabbitMQ's own limit on ``x-max-priority``.
AMQP_MAX_PRIORITY = 255


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
    :func:`~celeriac.routing.matching.headers_match`); other exchange types ignore them. They
    must be JSON values (the SQLite and Redis brokers store them as JSON, and message headers
    are JSON on every broker), and two bindings differing only in them are two bindings, as in
    RabbitMQ. Equality compares argument values by type as well (``1`` is not ``True``), like
    the matching does.
    """

    exchange: str
    queue: str
    routing_key: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"binding of {self.queue!r} to {self.exchange!r}"
        arguments = _json_table(self.arguments, what)
        x_match = arguments.get("x-match", "all")
        if not isinstance(x_match, str) or x_match not in X_MATCH_VALUES:
            raise ImproperlyConfigured(
                f"{what}: x-match must be one of {sorted(X_MATCH_VALUES)}, not {x_match!r}"
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
        ) and typed(self.arguments) == typed(other.arguments)

    def __hash__(self) -> int:
        # arguments are left out (dicts do not hash); bindings equal by __eq__ still hash alike
        return hash((self.exchange, self.queue, self.routing_key))


def _json_table(arguments: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """A private copy of an AMQP table, refused unless its names are strings and its values
    JSON (the emulating brokers store tables as JSON)."""
    table = dict(arguments or {})
    for key, value in table.items():
        if not isinstance(key, str):
            raise ImproperlyConfigured(f"{what}: argument names must be strings, not {key!r}")
        _check_json(value, f"{what}: argument {key!r}")
    return table


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


def typed(value: Any) -> Any:
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
        return ("array", tuple(typed(item) for item in value))
    if isinstance(value, Mapping):
        items = sorted(((str(k), typed(v)) for k, v in value.items()), key=itemgetter(0))
        return ("table", tuple(items))
    return ("other", type(value).__name__, value)


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue and the bindings that feed it.

    ``Queue("io")`` is reachable through the default exchange as routing key ``io``.
    ``Queue("eu", exchange=Exchange("orders", "topic"), routing_key="orders.eu.*")`` is also bound
    to ``orders``; ``bindings`` adds more (a queue fed by several keys or exchanges), and
    ``binding_exchanges`` are the exchanges those bindings need declared with the queue (as a
    kombu ``binding(Exchange(...))`` carries its exchange).

    ``max_priority`` is the highest priority honoured (0-9). ``arguments`` are the queue's AMQP
    arguments (kombu's ``queue_arguments``): RabbitMQ gets them as they are; an ``x-max-priority``
    there also lowers ``max_priority`` to it (to 9 at most), so that the brokers which emulate
    priorities honour the same range. The other arguments have no meaning on those brokers, which
    log that they ignore them (see :mod:`celeriac.transports.topology`).

    ``auto_delete`` queues are removed when the connection that declared them closes (broadcast
    queues use it); ``exclusive`` (on RabbitMQ: only that connection may consume it) implies
    ``auto_delete``, and is what an ``auto_delete`` queue gets when it does not say. ``no_declare``:
    never declare the queue, its exchange or its bindings; they are assumed to exist. ``alias``:
    another name the routes may use for it (:class:`Broadcast` queues are routed by their
    exchange's name, their own being unique per process).

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
    max_priority: int = MAX_PRIORITY
    arguments: Mapping[str, Any] = field(default_factory=dict)
    binding_arguments: Mapping[str, Any] = field(default_factory=dict)
    exclusive: bool | None = None
    no_declare: bool = False
    alias: str | None = None
    binding_exchanges: tuple[Exchange, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ImproperlyConfigured(f"a queue needs a non-empty name, not {self.name!r}")
        if not 0 <= self.max_priority <= MAX_PRIORITY:
            raise ImproperlyConfigured(
                f"queue {self.name!r}: max_priority must be within 0-{MAX_PRIORITY}, "
                f"not {self.max_priority}"
            )
        arguments = _json_table(self.arguments, f"queue {self.name!r}")
        declared = arguments.get("x-max-priority")
        if declared is not None:
            if (
                not isinstance(declared, int)
                or isinstance(declared, bool)
                or not 0 <= declared <= AMQP_MAX_PRIORITY
            ):
                raise ImproperlyConfigured(
                    f"queue {self.name!r}: x-max-priority must be an integer within "
                    f"0-{AMQP_MAX_PRIORITY}, not {declared!r}"
                )
            object.__setattr__(self, "max_priority", min(self.max_priority, declared))
        object.__setattr__(self, "arguments", arguments)
        object.__setattr__(
            self, "binding_arguments", _json_table(self.binding_arguments, f"queue {self.name!r}")
        )
        object.__setattr__(self, "bindings", tuple(self.bindings))
        object.__setattr__(self, "binding_exchanges", tuple(self.binding_exchanges))
        exclusive = self.auto_delete if self.exclusive is None else bool(self.exclusive)
        object.__setattr__(self, "exclusive", exclusive)
        if exclusive:
            object.__setattr__(self, "auto_delete", True)

    def all_bindings(self) -> tuple[Binding, ...]:
        """Every binding to declare with this queue, the one from ``exchange``/``routing_key``
        first; none for a ``no_declare`` queue."""
        if self.no_declare:
            return ()
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
        """The exchanges to declare with this queue: its own, then its bindings'; none for a
        ``no_declare`` queue."""
        if self.no_declare:
            return ()
        found: dict[str, Exchange] = {}
        if self.exchange is not None and self.exchange.name != DEFAULT_EXCHANGE:
            found[self.exchange.name] = self.exchange
        for exchange in self.binding_exchanges:
            if exchange.name != DEFAULT_EXCHANGE:
                found.setdefault(exchange.name, exchange)
        return tuple(found.values())


class Broadcast(Queue):
    """A queue of its own for every consumer, all bound to one fanout exchange: every worker
    that consumes it gets every message (kombu's ``Broadcast``, with the same arguments).

    ``Broadcast("reload")`` is the fanout exchange ``reload`` and a queue ``bcast.<uuid>``
    (``queue=`` names it instead; ``unique=True`` still appends the uuid), ``auto_delete`` so it
    goes with its worker, and routed by the alias ``reload``::

        task_queues = [Broadcast("reload")]
        task_routes = {"app.reload_config": {"queue": "reload"}}

    The uuid is drawn when the object is made, so each process that imports the settings has a
    queue of its own; two workers in one process (threads) share one, and so split its messages.
    A producer does not declare a broadcast queue (it would catch a copy of every message for
    nobody), only its exchange.
    """

    __slots__ = ()

    def __init__(
        self,
        name: str = "",
        queue: str | None = None,
        unique: bool = False,
        auto_delete: bool = True,
        exchange: Exchange | None = None,
        alias: str | None = None,
        **options: Any,
    ) -> None:
        if not name and exchange is None:
            raise ImproperlyConfigured("Broadcast needs the name of its fanout exchange")
        import uuid  # here, not at the top: most processes never make a broadcast queue

        if unique:
            queue = f"{queue or 'bcast'}.{uuid.uuid4()}"
        elif not queue:
            queue = f"bcast.{uuid.uuid4()}"
        options.setdefault("exclusive", False)  # as kombu: auto_delete alone
        options.setdefault("routing_key", "")  # a fanout exchange reads no key
        super().__init__(
            name=queue,
            exchange=exchange if exchange is not None else Exchange(name, "fanout"),
            auto_delete=auto_delete,
            alias=alias or name or None,
            **options,
        )


def evolve(queue: Queue, **changes: Any) -> Queue:
    """``queue`` with some fields changed, of its own class (``dataclasses.replace`` cannot
    rebuild a :class:`Broadcast`, whose constructor takes kombu's arguments)."""
    values = {f.name: getattr(queue, f.name) for f in fields(queue)}
    values.update(changes)
    if isinstance(queue, Broadcast):
        name = values.pop("name")
        exchange = values["exchange"]
        return Broadcast(exchange.name if exchange is not None else "", queue=name, **values)
    return Queue(**values)


def is_broadcast(queue: Queue) -> bool:
    """True for a queue each consumer has alone (a :class:`Broadcast`): what a producer must
    not declare."""
    return isinstance(queue, Broadcast)


__all__ = [
    "AMQP_MAX_PRIORITY",
    "DEFAULT_EXCHANGE",
    "EXCHANGE_TYPES",
    "MAX_PRIORITY",
    "X_MATCH_VALUES",
    "Binding",
    "Broadcast",
    "Exchange",
    "ExchangeType",
    "Queue",
    "evolve",
    "is_broadcast",
    "typed",
]
