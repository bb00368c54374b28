"""URL scheme to transport class. Built-ins are imported lazily; third parties use entry points.

A package that ships a transport declares, in its ``pyproject.toml``::

    [project.entry-points."celeriac.transports"]
    nats = "celeriac_nats:NatsTransport"

and ``Celeriac(broker="nats://...")`` finds it. Nothing is imported until its scheme is asked for,
so an app on SQLite never imports redis-py.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from celeriac.errors import ImproperlyConfigured
from celeriac.transports.base import Transport
from celeriac.utils.urls import redact_url, scheme_of

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


def load_class(path: str, what: str) -> type[Any]:
    """Import ``module:Class``; a missing optional dependency names the bundle to install."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        bundle = {"redis": "redis", "aio_pika": "amqp", "aiormq": "amqp"}.get(
            (exc.name or "").split(".")[0]
        )
        hint = f' (pip install "celeriac[{bundle}]")' if bundle else ""
        raise ImproperlyConfigured(f"{what} needs the module {exc.name!r}{hint}") from exc
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ImproperlyConfigured(f"{what}: {path!r} is not a class")
    return cls


def transport_class(url: str) -> type[Transport]:
    """The transport class that serves ``url``'s scheme."""
    scheme = scheme_of(url)
    path = BUILTIN.get(scheme)
    if path is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == scheme:
                path = ep.value
                break
    if path is None:
        known = sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise ImproperlyConfigured(
            f"broker_url {redact_url(url)!r}: unknown scheme {scheme!r}; known: {', '.join(known)}"
        )
    cls = load_class(path, f"broker_url scheme {scheme!r}")
    if not issubclass(cls, Transport):
        raise ImproperlyConfigured(f"{path!r} is not a celeriac Transport")
    return cls


def create_transport(url: str, **options: Any) -> Transport:
    """A transport instance for ``url`` (not yet connected)."""
    return transport_class(url)(url, **options)
