"""kombu's ``Queue``, ``Exchange``, ``binding`` and ``Broadcast`` read as celeriac's own.

A Celery project keeps ``from kombu import Exchange, Queue`` in its settings; celeriac does not
depend on kombu, so it recognises these objects by their attributes (kombu's names, see
``kombu/entity.py``) and carries them over one by one. What cannot be carried is refused with
the setting's name, never dropped: an exchange with ``arguments`` (celeriac declares none),
bindings without an exchange.

kombu's per-queue options become the AMQP arguments kombu itself would declare
(``to_rabbitmq_queue_arguments``): ``expires`` and ``message_ttl`` in seconds become
``x-expires``/``x-message-ttl`` in milliseconds, ``max_length``, ``max_length_bytes`` and
``max_priority`` their ``x-`` names; as in kombu, they win over the same key in
``queue_arguments``.

``task_queues`` may also be Celery's older dict form, ``{name: {"exchange": ..., "exchange_type":
..., "routing_key": ...}}`` (``binding_key`` is the routing key's old name).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

from celeriac.errors import ImproperlyConfigured
from celeriac.routing.entities import (
    DEFAULT_EXCHANGE,
    EXCHANGE_TYPES,
    Binding,
    Broadcast,
    Exchange,
    ExchangeType,
    Queue,
)

logger = logging.getLogger("celeriac.routing")

#: kombu queue attributes -> (AMQP argument, conversion), as kombu's RABBITMQ_QUEUE_ARGUMENTS.
_QUEUE_OPTIONS: dict[str, tuple[str, Any]] = {
    "expires": ("x-expires", lambda s: int(float(s) * 1000)),
    "message_ttl": ("x-message-ttl", lambda s: int(float(s) * 1000)),
    "max_length": ("x-max-length", int),
    "max_length_bytes": ("x-max-length-bytes", int),
    "max_priority": ("x-max-priority", int),
}

#: The keys Celery's dict form of ``task_queues`` may give (``Queue.from_dict`` in kombu).
_DICT_KEYS = frozenset(
    {
        "exchange",
        "exchange_type",
        "routing_key",
        "binding_key",
        "durable",
        "auto_delete",
        "queue_durable",
        "queue_auto_delete",
        "exchange_durable",
        "exchange_auto_delete",
        "queue_arguments",
        "binding_arguments",
        "exclusive",
        "no_declare",
        "alias",
        *_QUEUE_OPTIONS,
    }
)


def is_queue_like(value: Any) -> bool:
    """A celeriac :class:`Queue` or an object with kombu's queue attributes."""
    if isinstance(value, Queue):
        return True
    return all(hasattr(value, a) for a in ("name", "exchange", "routing_key", "queue_arguments"))


def is_exchange_like(value: Any) -> bool:
    """A celeriac :class:`Exchange` or an object with kombu's exchange attributes."""
    if isinstance(value, Exchange):
        return True
    return (
        not isinstance(value, str)
        and hasattr(value, "name")
        and hasattr(value, "type")
        and not hasattr(value, "routing_key")
    )


def exchange_name(value: Any) -> str | None:
    """The name of an exchange given as a name, a celeriac or a kombu exchange."""
    if value is None or isinstance(value, str):
        return value
    if is_exchange_like(value):
        return str(value.name or DEFAULT_EXCHANGE)
    raise ImproperlyConfigured(f"an exchange must be a name or an Exchange, not {value!r}")


def as_exchange(value: Any, what: str) -> Exchange | None:
    """celeriac's :class:`Exchange` for ``value``; ``None`` for AMQP's default exchange ``""``.

    A name alone is a direct exchange, as in kombu.
    """
    if value is None:
        return None
    if isinstance(value, Exchange):
        return None if value.name == DEFAULT_EXCHANGE else value
    if isinstance(value, str):
        return Exchange(value) if value else None
    if not is_exchange_like(value):
        raise ImproperlyConfigured(f"{what}: not an exchange: {value!r}")
    name = value.name or DEFAULT_EXCHANGE
    if not isinstance(name, str):
        raise ImproperlyConfigured(f"{what}: an exchange name must be a string, not {name!r}")
    if not name:
        return None
    arguments = getattr(value, "arguments", None)
    if arguments:
        raise ImproperlyConfigured(
            f"{what}: exchange {name!r} has arguments {dict(arguments)!r}, which celeriac "
            "cannot declare (an alternate exchange or a plug-in's exchange type is not supported)"
        )
    kind = value.type or "direct"
    if kind not in EXCHANGE_TYPES:
        raise ImproperlyConfigured(
            f"{what}: exchange {name!r} has type {kind!r}; celeriac supports "
            f"{', '.join(sorted(EXCHANGE_TYPES))}"
        )
    durable = getattr(value, "durable", True)
    return Exchange(
        name, cast(ExchangeType, kind), durable=True if durable is None else bool(durable)
    )


def _bindings(value: Any, queue: str, what: str) -> tuple[list[Binding], list[Exchange]]:
    """kombu ``binding`` objects (or celeriac :class:`Binding`) of ``queue``, with the exchanges
    they need declared; sorted, since kombu keeps them in a set."""
    found: list[Binding] = []
    exchanges: list[Exchange] = []
    for item in value or ():
        if isinstance(item, Binding):
            found.append(item)
            continue
        if not all(hasattr(item, a) for a in ("exchange", "routing_key", "arguments")):
            raise ImproperlyConfigured(f"{what}: queue {queue!r}: not a binding: {item!r}")
        exchange = as_exchange(item.exchange, f"{what}: queue {queue!r}")
        if exchange is None:
            raise ImproperlyConfigured(
                f"{what}: queue {queue!r}: a binding needs a named exchange: {item!r}"
            )
        exchanges.append(exchange)
        found.append(Binding(exchange.name, queue, item.routing_key or "", item.arguments or {}))
    found.sort(key=lambda b: (b.exchange, b.routing_key))
    exchanges.sort(key=lambda e: e.name)
    return found, exchanges


def _arguments(value: Any) -> dict[str, Any]:
    """A kombu queue's declaration arguments, as kombu computes them."""
    arguments = dict(getattr(value, "queue_arguments", None) or {})
    for attribute, (argument, convert) in _QUEUE_OPTIONS.items():
        option = getattr(value, attribute, None)
        if option is not None:
            arguments[argument] = convert(option)
    return arguments


def _flag(value: Any, attribute: str, default: bool) -> bool:
    option = getattr(value, attribute, None)
    return default if option is None else bool(option)


def as_queue(value: Any, what: str = "task_queues") -> Queue:
    """celeriac's :class:`Queue` for a celeriac or kombu queue (a kombu ``Broadcast`` becomes a
    celeriac :class:`Broadcast` with the same queue name and alias)."""
    if isinstance(value, Queue):
        return value
    if not is_queue_like(value):
        raise ImproperlyConfigured(f"{what}: not a queue: {value!r}")
    name = value.name
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(f"{what}: a queue needs a non-empty name, not {name!r}")
    exchange = as_exchange(value.exchange, f"{what}: queue {name!r}")
    bindings, binding_exchanges = _bindings(getattr(value, "bindings", None), name, what)
    routing_key = value.routing_key
    if not routing_key and exchange is None:
        routing_key = None  # the default exchange reaches it by name
    alias = getattr(value, "alias", None) or None
    fields: dict[str, Any] = {
        "durable": _flag(value, "durable", True),
        "auto_delete": _flag(value, "auto_delete", False),
        "exclusive": _flag(value, "exclusive", False),
        "no_declare": _flag(value, "no_declare", False),
        "arguments": _arguments(value),
        "binding_arguments": dict(getattr(value, "binding_arguments", None) or {}),
        "bindings": tuple(bindings),
        "binding_exchanges": tuple(binding_exchanges),
    }
    for ignored in ("consumer_arguments", "no_ack"):
        if getattr(value, ignored, None):
            logger.warning("queue %r: %s is not supported by celeriac; ignored", name, ignored)
    if any(klass.__name__ == "Broadcast" for klass in type(value).__mro__):
        return Broadcast(
            exchange.name if exchange is not None else name,
            queue=name,
            exchange=exchange,
            alias=alias,
            routing_key=routing_key,
            **fields,
        )
    return Queue(name, exchange=exchange, routing_key=routing_key, alias=alias, **fields)


def _from_dict(name: Any, options: Mapping[str, Any], what: str) -> Queue:
    """Celery's dict form of one queue (kombu's ``Queue.from_dict``)."""
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(f"{what}: a queue needs a non-empty name, not {name!r}")
    unknown = sorted(set(options) - _DICT_KEYS)
    if unknown:
        raise ImproperlyConfigured(f"{what}: queue {name!r}: unknown option(s) {unknown}")
    durable = options.get("durable")
    auto_delete = options.get("auto_delete")
    exchange_name = options.get("exchange")
    exchange: Exchange | None = None
    if exchange_name:
        exchange_durable = options.get("exchange_durable", durable)
        exchange = Exchange(
            str(exchange_name),
            options.get("exchange_type") or "direct",
            durable=True if exchange_durable is None else bool(exchange_durable),
        )
    routing_key = options.get("binding_key") or options.get("routing_key")
    arguments = dict(options.get("queue_arguments") or {})
    for attribute, (argument, convert) in _QUEUE_OPTIONS.items():
        if options.get(attribute) is not None:
            arguments[argument] = convert(options[attribute])
    queue_durable = options.get("queue_durable", durable)
    queue_auto_delete = options.get("queue_auto_delete", auto_delete)
    return Queue(
        name,
        exchange=exchange,
        routing_key=routing_key if routing_key is not None else (name if exchange else None),
        durable=True if queue_durable is None else bool(queue_durable),
        auto_delete=bool(queue_auto_delete),
        exclusive=options.get("exclusive"),
        no_declare=bool(options.get("no_declare")),
        alias=options.get("alias"),
        arguments=arguments,
        binding_arguments=dict(options.get("binding_arguments") or {}),
    )


def queues_setting(value: Any, setting: str = "task_queues") -> tuple[Queue, ...]:
    """The queues a ``task_queues`` value declares, as celeriac queues, in order.

    Accepts ``None``, a list, tuple or set of celeriac or kombu queues, or Celery's dict form
    (``{name: queue}`` or ``{name: {options}}``). Anything else, or two queues of one name, fails
    naming the setting.
    """
    what = f"setting {setting!r}"
    if value is None:
        return ()
    items: Iterable[Any]
    try:
        if isinstance(value, Mapping):
            items = [
                option if is_queue_like(option) else _dict_queue(name, option, what)
                for name, option in value.items()
            ]
        elif isinstance(value, list | tuple | set | frozenset):
            items = value
        else:
            raise ImproperlyConfigured(
                f"{what} must be a list of queues (or Celery's dict form), not "
                f"{type(value).__name__}: {value!r}"
            )
        queues = [as_queue(item, what) for item in items]
    except ImproperlyConfigured as exc:
        message = str(exc)
        raise ImproperlyConfigured(
            message if message.startswith(what) else f"{what}: {message}"
        ) from None
    seen: set[str] = set()
    for queue in queues:
        if queue.name in seen:
            raise ImproperlyConfigured(f"{what}: two queues are named {queue.name!r}")
        seen.add(queue.name)
    return tuple(queues)


def _dict_queue(name: Any, option: Any, what: str) -> Queue:
    if not isinstance(option, Mapping):
        raise ImproperlyConfigured(
            f"{what}: queue {name!r} must be a Queue or a dict of options, not {option!r}"
        )
    return _from_dict(name, option, what)


__all__ = [
    "as_exchange",
    "as_queue",
    "exchange_name",
    "is_exchange_like",
    "is_queue_like",
    "queues_setting",
]
