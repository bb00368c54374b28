"""AMQP broker URLs and options to connection targets, shared by the transport and ``rpc://``.

Accepted forms (Celery's, so a Celery user's ``broker_url`` keeps working)::

    amqp://user:password@host:port/vhost     vhost percent-encoded; "" or "/" means the vhost "/"
    amqp://user:password@host:port//         (Celery's spelling of the default vhost)
    amqps://...                               TLS, see the options below
    pyamqp://...                              kombu's name for amqp:// (its py-amqp client)
    amqp://host-a;amqp://host-b               failover: tried in turn, with backoff

Options come from the URL's query and from the mapping passed in (``broker_transport_options``),
the mapping winning, so that a password or a key path need not live in a URL that may be logged:

* ``heartbeat`` (seconds, default 60; 0 turns heartbeats off): a dead peer is noticed within about
  three heartbeats instead of at the next TCP timeout;
* ``connect_timeout`` (seconds, default 10; ``connection_timeout`` is accepted too);
* ``ssl`` / ``ssl_options`` (Celery's ``broker_use_ssl`` shape): ``True`` or a mapping with
  ``ca_certs``, ``certfile``, ``keyfile``, ``cert_reqs`` (``CERT_REQUIRED``/``required``,
  ``CERT_OPTIONAL``, ``CERT_NONE``) and ``server_hostname`` (the name sent in SNI and checked
  against the certificate, when it is not the URL's host); giving TLS options to an ``amqp://``
  URL turns TLS on;
* ``login`` / ``password`` override the URL's credentials; ``connection_name`` shows in the
  RabbitMQ management UI.

Public API::

    parse_amqp_urls(url, options) -> list[AmqpTarget]     # raises ImproperlyConfigured
    await connect_first(targets, attempts=3, backoff=0.5) -> AbstractConnection
                                                          # raises TransportError

:class:`AmqpTarget` keeps its password out of ``repr`` and offers :attr:`AmqpTarget.display`, a
redacted URL for log lines. Errors never format the password: :func:`connect_first` builds its
:class:`~celeriac.errors.TransportError` from the redacted URL and the client's error text with
any occurrence of the password masked, and does not chain the client's exception (whose own text
or arguments could hold the URL).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractConnection

from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.utils.urls import redact_url

__all__ = ["AMQP_SCHEMES", "AmqpTarget", "connect_first", "parse_amqp_urls"]

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
#: Other spellings of a scheme, as kombu accepts them: ``pyamqp://`` picks its py-amqp client,
#: which is its default for ``amqp://`` anyway, so it means the same broker and the same wire.
SCHEME_ALIASES = {"pyamqp": "amqp"}
#: Every scheme this module parses (``rpc://`` checks a broker URL against it).
AMQP_SCHEMES = frozenset(DEFAULT_PORTS) | frozenset(SCHEME_ALIASES)
DEFAULT_HEARTBEAT = 60
DEFAULT_CONNECT_TIMEOUT = 10.0
MAX_BACKOFF = 10.0

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "cert_none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "cert_optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
    "cert_required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class AmqpTarget:
    """One broker to try: where, as whom, and how (TLS, heartbeat, timeout)."""

    scheme: str
    host: str
    port: int
    login: str
    password: str = field(repr=False)
    virtualhost: str = "/"
    heartbeat: int = DEFAULT_HEARTBEAT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    connection_name: str | None = None

    @property
    def display(self) -> str:
        """The URL with the password masked: what a log line or an error may show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        vhost = quote(self.virtualhost, safe="")
        auth = f"{quote(self.login, safe='')}:***@" if self.login else ""
        return f"{self.scheme}://{auth}{host}:{self.port}/{vhost}"

    async def connect(self) -> AbstractConnection:
        """Open one connection to this target (aio-pika's errors pass through unchanged)."""
        extra: dict[str, Any] = {"heartbeat": self.heartbeat}
        if self.connection_name:
            extra["name"] = self.connection_name
        connection: AbstractConnection = await aio_pika.connect(
            host=self.host,
            port=self.port,
            login=self.login,
            password=self.password,
            virtualhost=self.virtualhost,
            ssl=self.scheme == "amqps",
            ssl_context=self.ssl_context,
            timeout=self.connect_timeout,
            **extra,
        )
        return connection

    def scrub(self, text: str) -> str:
        """``text`` with this target's password masked (for a client's error message)."""
        if self.password and len(self.password) > 1:
            text = text.replace(self.password, "***").replace(quote(self.password), "***")
        return text


def _number(url: str, name: str, value: Any, kind: type[int] | type[float]) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise ImproperlyConfigured(
            f"{redact_url(url)!r}: option {name!r} must be a number >= 0, not {value!r}"
        )
    return number


def _cert_reqs(value: Any) -> ssl.VerifyMode:
    if isinstance(value, ssl.VerifyMode):
        return value
    if isinstance(value, int):
        return ssl.VerifyMode(value)
    found = _CERT_REQS.get(str(value).strip().lower())
    if found is None:
        raise ImproperlyConfigured(
            f"AMQP TLS option 'cert_reqs' must be one of required, optional, none; not {value!r}"
        )
    return found


def _tls_settings(merged: Mapping[str, Any]) -> dict[str, Any] | None:
    """The TLS mapping from ``ssl``/``ssl_options``/query keys, or None when TLS is not asked."""
    settings: dict[str, Any] = {}
    wanted = False
    raw = merged.get("ssl")
    if isinstance(raw, Mapping):
        settings.update(raw)
        wanted = True
    elif raw is not None and str(raw).strip().lower() in ("1", "true", "yes", "on"):
        wanted = True
    if isinstance(merged.get("ssl_options"), Mapping):
        settings.update(merged["ssl_options"])
        wanted = True
    for key in ("ca_certs", "certfile", "keyfile", "cert_reqs", "server_hostname"):
        if merged.get(key) is not None:
            settings.setdefault(key, merged[key])
            wanted = True
    return settings if wanted else None


class _NamedServerContext(ssl.SSLContext):
    """A client context that sends and checks ``server_hostname`` whatever host is dialled.

    aio-pika passes no ``server_hostname`` down to ``asyncio.open_connection`` (its keyword
    arguments are filtered), so asyncio would always use the host of the URL; a broker reached
    by IP address or through a tunnel, whose certificate names it otherwise, needs the name set
    here, where asyncio wraps the socket.
    """

    server_name: str = ""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_bio(*args, **kwargs)


def _ssl_context(settings: Mapping[str, Any]) -> ssl.SSLContext:
    """An SSL context from Celery's ``broker_use_ssl`` keys (verification on unless told not)."""
    known = {"ca_certs", "certfile", "keyfile", "cert_reqs", "server_hostname", "check_hostname"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ImproperlyConfigured(f"unknown AMQP TLS options {unknown}; known: {sorted(known)}")
    if settings.get("server_hostname"):
        # what ssl.create_default_context does for a client, on the subclass
        named = _NamedServerContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = str(settings["server_hostname"])
        context: ssl.SSLContext = named
        if settings.get("ca_certs"):
            context.load_verify_locations(cafile=settings["ca_certs"])
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context = ssl.create_default_context(cafile=settings.get("ca_certs"))
    mode = _cert_reqs(settings.get("cert_reqs", ssl.CERT_REQUIRED))
    if mode != ssl.CERT_REQUIRED or settings.get("check_hostname") is False:
        context.check_hostname = False
    context.verify_mode = mode
    if settings.get("certfile"):
        context.load_cert_chain(settings["certfile"], settings.get("keyfile"))
    return context


def _parse_one(url: str, options: Mapping[str, Any]) -> AmqpTarget:
    safe = redact_url(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"{safe!r} is not a valid AMQP URL: {exc}") from None
    scheme = parts.scheme.lower()
    scheme = SCHEME_ALIASES.get(scheme, scheme)
    if scheme not in DEFAULT_PORTS:
        raise ImproperlyConfigured(
            f"not an AMQP URL: {safe!r} (use amqp://, amqps:// or pyamqp://)"
        )
    merged: dict[str, Any] = {**dict(parse_qsl(parts.query)), **options}
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = unquote(path) if path not in ("", "/") else "/"
    tls = _tls_settings(merged)
    if tls is not None and scheme == "amqp":
        scheme = "amqps"
    timeout = merged.get("connect_timeout", merged.get("connection_timeout"))
    return AmqpTarget(
        scheme=scheme,
        host=parts.hostname or "127.0.0.1",
        port=port or DEFAULT_PORTS[scheme],
        login=str(merged.get("login") or unquote(parts.username or "") or "guest"),
        password=str(merged.get("password") or unquote(parts.password or "") or "guest"),
        virtualhost=vhost,
        heartbeat=int(_number(url, "heartbeat", merged.get("heartbeat", DEFAULT_HEARTBEAT), int)),
        connect_timeout=float(
            _number(
                url,
                "connect_timeout",
                DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout,
                float,
            )
        ),
        ssl_context=_ssl_context(tls) if tls is not None else None,
        connection_name=merged.get("connection_name"),
    )


def parse_amqp_urls(url: str, options: Mapping[str, Any] | None = None) -> list[AmqpTarget]:
    """The targets of a (``;``-separated) AMQP URL, in the order failover tries them."""
    parts = [part for part in url.split(";") if part.strip()]
    if not parts:
        raise ImproperlyConfigured("the AMQP broker URL is empty")
    return [_parse_one(part, options or {}) for part in parts]


async def connect_first(
    targets: Sequence[AmqpTarget], *, attempts: int = 3, backoff: float = 0.5
) -> AbstractConnection:
    """A connection to the first target that answers, trying the list ``attempts`` times.

    Within a round the targets are tried in order without waiting (failover should be quick);
    between rounds the wait doubles from ``backoff`` up to ``MAX_BACKOFF`` seconds. The error
    raised after the last round names every target (redacted) with its last failure.
    """
    if not targets:
        raise ImproperlyConfigured("no AMQP broker to connect to")
    failures: dict[str, str] = {}
    delay = backoff
    for round_no in range(max(1, attempts)):
        if round_no:
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        for target in targets:
            try:
                return await target.connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every client failure means "try the next target"
                text = target.scrub(f"{type(exc).__name__}: {exc}")
                failures[target.display] = text
                logger.debug("AMQP broker %s unreachable: %s", target.display, text)
    summary = "; ".join(f"{where} ({why})" for where, why in failures.items())
    raise TransportError(f"cannot connect to RabbitMQ: {summary}")
