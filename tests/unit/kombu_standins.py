"""Stand-ins for kombu 5.7's ``Exchange``, ``Queue``, ``binding`` and ``Broadcast``.

They have kombu's class names, attribute names and defaults (``kombu/entity.py``,
``kombu/common.py``): options not given are ``None``; a queue without an exchange has
``Exchange("")``; a queue given bindings has no exchange; ``exclusive`` implies ``auto_delete``;
``Broadcast`` names its queue ``bcast.<uuid>``, keeps the exchange's name as ``alias`` and binds
to a fanout exchange of that name; entities are callable (kombu binds them to a channel that
way). celeriac must read them as it reads real kombu objects, without importing kombu.
"""

from __future__ import annotations

import uuid
from typing import Any


class Exchange:
    name = ""
    type = "direct"
    durable = True
    auto_delete = False
    delivery_mode = None
    no_declare = False

    def __init__(self, name: str = "", type: str = "", **options: Any) -> None:
        self.arguments = options.pop("arguments", None)
        for key, value in options.items():
            setattr(self, key, value)
        self.name = name or self.name
        self.type = type or self.type

    def __call__(self, channel: Any) -> Exchange:
        return self


class binding:
    def __init__(self, exchange: Any = None, routing_key: str = "", arguments: Any = None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.arguments = arguments
        self.unbind_arguments = None


class Queue:
    name = ""
    exchange: Exchange | None = Exchange("")
    routing_key = ""
    durable = True
    exclusive = False
    auto_delete = False
    no_ack = False
    OPTIONS = (
        "queue_arguments",
        "binding_arguments",
        "consumer_arguments",
        "alias",
        "no_declare",
        "expires",
        "message_ttl",
        "max_length",
        "max_length_bytes",
        "max_priority",
    )

    def __init__(
        self,
        name: str = "",
        exchange: Any = None,
        routing_key: str = "",
        bindings: Any = None,
        **options: Any,
    ) -> None:
        for key in self.OPTIONS:
            setattr(self, key, options.pop(key, None))
        for key, value in options.items():
            setattr(self, key, value)
        self.name = name or self.name
        if isinstance(exchange, str):
            self.exchange = Exchange(exchange)
        elif isinstance(exchange, Exchange):
            self.exchange = exchange
        self.routing_key = routing_key or self.routing_key
        self.bindings: set[Any] = set(bindings or [])
        if isinstance(exchange, list | tuple | set):
            self.bindings |= set(exchange)
        if self.bindings:
            self.exchange = None
        if self.exclusive:
            self.auto_delete = True

    def __call__(self, channel: Any) -> Queue:
        return self


class Broadcast(Queue):
    def __init__(
        self,
        name: str | None = None,
        queue: str | None = None,
        unique: bool = False,
        auto_delete: bool = True,
        exchange: Any = None,
        alias: str | None = None,
        **options: Any,
    ) -> None:
        queue = f"{queue or 'bcast'}.{uuid.uuid4()}" if unique else queue or f"bcast.{uuid.uuid4()}"
        self.queue = queue
        super().__init__(
            queue,
            exchange=exchange if exchange is not None else Exchange(name or "", type="fanout"),
            alias=alias or name,
            auto_delete=auto_delete,
            **options,
        )
