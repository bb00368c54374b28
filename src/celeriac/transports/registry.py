"""URL scheme to transport class. Built-ins are imported lazily; third parties use entry points.

A package that ships a transport declares, in its ``pyproject.toml``::

    [project.entry-points."celeriac.transports"]
    nats = "celeriac_nats:NatsTransport"

and ``Celeriac(broker="nats://...")`` finds it. Nothing is imported until its scheme is asked for,
so an app on SQLite never imports redis-py.
"""

from __future__ import annotations

from typing import Any

from celeriac.transports.base import Transport
from celeriac.utils.plugins import class_for_url, load_class

__all__ = ["BUILTIN", "create_transport", "load_class", "transport_class"]

BUILTIN: dict[str, str] = {
    "memory": "celeriac.transports.memory:MemoryTransport",
    "sqlite": "celeriac.transports.sqlite:SQLiteTransport",
    "redis": "celeriac.transports.redis:RedisTransport",
    "rediss": "celeriac.transports.redis:RedisTransport",
    "unix": "celeriac.transports.redis:RedisTransport",
    "redis+sentinel": "celeriac.transports.redis:RedisTransport",
    "amqp": "celeriac.transports.amqp:AMQPTransport",
    "amqps": "celeriac.transports.amqp:AMQPTransport",
}

ENTRY_POINT_GROUP = "celeriac.transports"


def transport_class(url: str) -> type[Transport]:
    """The transport class that serves ``url``'s scheme."""
    cls: type[Transport] = class_for_url(url, BUILTIN, ENTRY_POINT_GROUP, "broker_url", Transport)
    return cls


def create_transport(url: str, **options: Any) -> Transport:
    """A transport instance for ``url`` (not yet connected)."""
    return transport_class(url)(url, **options)
