"""Where ``rpc://`` replies travel: over RabbitMQ (a reply queue) or over Redis (a reply list).

``rpc://`` alone means "over the app's broker", as in Celery, whichever broker that is:
RabbitMQ (``amqp://``, ``amqps://``, ``pyamqp://``) carries replies as AMQP messages
(:mod:`.link`), Redis (``redis://``, ``rediss://``, ``unix://``, ``sentinel://``...) as entries of
a Redis list (:mod:`.redis_link`). ``rpc://user:password@host/vhost`` names a RabbitMQ of its
own, whatever the broker. The broker's family is read from the transport registry (which class
serves its scheme), so this module imports no client library: an app whose replies go over
Redis never imports the AMQP client, and the reverse.

Both links offer the same four calls (:class:`Link`); the backend
(:class:`~celeriac.results.rpc.RPCBackend`) neither knows nor cares which one it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from celeriac.errors import ImproperlyConfigured
from celeriac.transports.registry import BUILTIN
from celeriac.utils.urls import redact_url, scheme_of

__all__ = ["AMQP_OPTIONS", "Link", "OnReply", "Reply", "Route", "route_for"]

#: ``(routing_key, correlation_id, content_type, content_encoding, body)``: one reply to send.
Reply = tuple[str, str, str, str, bytes]
#: Called (on the link's own thread) with each reply's body, content type and encoding.
OnReply = Callable[[bytes, str | None, str | None], None]

#: The AMQP connection options ``amqp_url`` understands (``rpc://`` over RabbitMQ only).
AMQP_OPTIONS = frozenset(
    {
        "heartbeat",
        "connect_timeout",
        "connection_timeout",
        "ssl",
        "ssl_options",
        "ca_certs",
        "certfile",
        "keyfile",
        "cert_reqs",
        "server_hostname",
        "login",
        "password",
        "connection_name",
    }
)

_AMQP_TRANSPORT = "celeriac.transports.amqp:AMQPTransport"
_REDIS_TRANSPORT = "celeriac.transports.redis:RedisTransport"


class Link(Protocol):
    """One process's reply connection: consume its own replies, send other processes' ones."""

    #: This process's reply queue: what its sends carry as ``reply_to``.
    queue_name: str
    #: Where the link connects, password masked: what errors and ``repr`` show.
    display: str

    def start(self) -> None:
        """Start receiving replies (idempotent); raises when the server cannot be reached."""

    def send(self, replies: Sequence[Reply]) -> None:
        """Deliver ``replies`` to their queues; returns once the server has them."""

    async def asend(self, replies: Sequence[Reply]) -> None:
        """:meth:`send` for a coroutine."""

    def close(self) -> None:
        """Delete this process's reply queue, stop receiving, close the connection."""


class Route:
    """The parsed choice of :func:`route_for`: builds a fresh :class:`Link` on demand (one per
    process: a forked child builds its own)."""

    def __init__(self, make: Callable[[str, float, OnReply], Link], targets: list[Any]) -> None:
        self._make = make
        #: The AMQP targets, when replies go over RabbitMQ (for ``repr`` and tests).
        self.targets = targets

    def link(self, queue_name: str, queue_expires: float, on_reply: OnReply) -> Link:
        return self._make(queue_name, queue_expires, on_reply)


def _broker_family(broker_url: str | None) -> str | None:
    """``"amqp"`` or ``"redis"`` for a broker URL whose transport is built in, else ``None``."""
    if not broker_url:
        return None
    path = BUILTIN.get(scheme_of(broker_url.split(";", 1)[0].strip()))
    return {_AMQP_TRANSPORT: "amqp", _REDIS_TRANSPORT: "redis"}.get(path or "")


def route_for(
    url: str,
    broker_url: str | None,
    broker_options: Mapping[str, Any],
    options: Mapping[str, Any],
) -> Route:
    """Where the replies of ``rpc://`` URL ``url`` go, given the app's broker.

    ``options`` are the backend's connection options (``result_backend_transport_options``
    minus the backend's own); over Redis there are none, since the broker's are used.
    """
    parts = [part.strip() for part in url.split(";") if part.strip()]
    rests = [part.split("://", 1)[1] if "://" in part else part for part in parts]
    if any(urlsplit("amqp://" + rest).netloc for rest in rests):  # a RabbitMQ of its own
        return _amqp_route(";".join("amqp://" + rest for rest in rests), options)
    query = dict(parse_qsl(urlsplit("amqp://" + rests[0]).query)) if rests else {}
    own = {**query, **options}
    family = _broker_family(broker_url)
    if family == "amqp" and broker_url is not None:
        return _amqp_route(broker_url, {**broker_options, **own})
    if family == "redis" and broker_url is not None:
        if own:
            raise ImproperlyConfigured(
                f"rpc:// over the Redis broker takes its connection from broker_url and "
                f"broker_transport_options; these AMQP options do not apply: {sorted(own)}"
            )
        return _redis_route(broker_url, broker_options)
    where = redact_url(broker_url) if broker_url else "not set"
    raise ImproperlyConfigured(
        f"result_backend 'rpc://' sends results over the broker, which must be RabbitMQ "
        f"(amqp://) or Redis (redis://), but broker_url is {where}; use one of those, or name "
        f"a RabbitMQ in the backend URL (rpc://user:password@host:5672/vhost)"
    )


def _amqp_route(url: str, options: Mapping[str, Any]) -> Route:
    from celeriac.results.rpc.link import ReplyLink
    from celeriac.transports.amqp.url import parse_amqp_urls

    targets = parse_amqp_urls(url, options)  # a bad URL fails here, at construction

    def make(queue_name: str, queue_expires: float, on_reply: OnReply) -> Link:
        return ReplyLink(targets, queue_name, queue_expires, on_reply)

    return Route(make, targets)


def _redis_route(broker_url: str, broker_options: Mapping[str, Any]) -> Route:
    from celeriac.results.rpc.redis_link import RedisReplyLink, check_redis_url

    check_redis_url(broker_url, broker_options)  # a bad URL fails here, at construction

    def make(queue_name: str, queue_expires: float, on_reply: OnReply) -> Link:
        return RedisReplyLink(broker_url, broker_options, queue_name, queue_expires, on_reply)

    return Route(make, [])
