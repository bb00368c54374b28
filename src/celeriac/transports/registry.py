"""URL scheme to transport class. Built-ins are imported lazily; third parties use entry points.

A package that ships a transport declares, in its ``pyproject.toml``::

    [project.entry-points."celeriac.transports"]
    nats = "celeriac_nats:NatsTransport"

and ``Celeriac(broker="nats://...")`` finds it. Nothing is imported until its scheme is asked for,
so an app on SQLite never imports redis-py, and an app on Redis imports it when it first
creates a transport, not when the app is built (:func:`check_transport_url` validates the URL
at start-up without the import).
"""

from __future__ import annotations

from typing import Any

from celeriac.transports.base import Transport
from celeriac.utils.plugins import check_url, class_for_url, load_class

__all__ = ["BUILTIN", "check_transport_url", "create_transport", "load_class", "transport_class"]

BUILTIN: dict[str, str] = {
    "memory": "celeriac.transports.memory:MemoryTransport",
    "sqlite": "celeriac.transports.sqlite:SQLiteTransport",
    "redis": "celeriac.transports.redis:RedisTransport",
    "rediss": "celeriac.transports.redis:RedisTransport",
    "unix": "celeriac.transports.redis:RedisTransport",
    "redis+sentinel": "celeriac.transports.redis:RedisTransport",
    "sentinel": "celeriac.transports.redis:RedisTransport",  # kombu's spelling of redis+sentinel
    "amqp": "celeriac.transports.amqp:AMQPTransport",
    "amqps": "celeriac.transports.amqp:AMQPTransport",
    "pyamqp": "celeriac.transports.amqp:AMQPTransport",  # kombu's name for its amqp:// client
}

#: The optional packages each built-in module imports, in the order it imports them, so that
#: start-up can say which one is missing without importing the module (the test
#: ``test_import_cost.py`` checks the lists against what the modules really import).
REQUIRES: dict[str, tuple[str, ...]] = {
    "celeriac.transports.redis": ("redis",),
    "celeriac.transports.amqp": ("aiormq", "pamqp", "aio_pika"),
}

ENTRY_POINT_GROUP = "celeriac.transports"


def transport_class(url: str) -> type[Transport]:
    """The transport class that serves ``url``'s scheme."""
    cls: type[Transport] = class_for_url(url, BUILTIN, ENTRY_POINT_GROUP, "broker_url", Transport)
    return cls


def check_transport_url(url: str) -> None:
    """Fail now, naming ``broker_url``, if ``url`` cannot be served: an unknown scheme or a
    missing package. A built-in transport's module is not imported (its client library may
    take tens of milliseconds, paid by every process that merely builds the app)."""
    check_url(url, BUILTIN, ENTRY_POINT_GROUP, "broker_url", Transport, REQUIRES)


def create_transport(url: str, **options: Any) -> Transport:
    """A transport instance for ``url`` (not yet connected)."""
    return transport_class(url)(url, **options)
