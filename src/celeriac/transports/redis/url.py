"""Redis URLs and options to redis-py client arguments, for the broker and the result backend.

Accepted forms (Celery's, so a Celery user's settings keep working)::

    redis://[[user]:password@]host[:port][/db][?option=value...]
    rediss://...       TLS; options ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile
    unix:///path/to/redis.sock?db=N[&password=...]
    redis+sentinel://[:password@]host:26379[;sentinel://host2:26379...][/db]  (master_name)
    sentinel://[:password@]host:26379[;sentinel://host2:26379...][/db]        (kombu's spelling)

Options come from the URL's query and from ``broker_transport_options`` (or the backend's
options); the latter win, so a password or a certificate path need not be written in a URL that
may be logged. Keys that are not connection options (``lease_seconds``, ``key_prefix``...) are
left to the caller. The password is percent-decoded here and never formatted into a message:
errors name the URL through :func:`celeriac.utils.urls.redact_url`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celeriac.errors import ImproperlyConfigured
from celeriac.utils.urls import redact_url

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

_FLOATS = ("socket_timeout", "socket_connect_timeout", "health_check_interval")
_BOOLS = ("socket_keepalive", "ssl_check_hostname")
_STRINGS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "client_name", "username", "password")
_CERT_REQS = {
    "none": "none",
    "cert_none": "none",
    "optional": "optional",
    "cert_optional": "optional",
    "required": "required",
    "cert_required": "required",
}
_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "sentinel")


@dataclass(frozen=True)
class SentinelSpec:
    """Where the sentinels are and which master to ask them for.

    ``connection_kwargs`` go to the master's connections (db, password, TLS, timeouts);
    ``sentinel_kwargs`` to the connections to the sentinels themselves (only the socket
    timeouts, and a ``sentinel_password`` if given, as redis-py does, overlaid by kombu's
    ``sentinel_kwargs`` option). ``min_other_sentinels`` is redis-py's (and kombu's) quorum check
    on the master a sentinel reports.
    """

    sentinels: list[tuple[str, int]]
    master_name: str
    connection_kwargs: dict[str, Any] = field(repr=False)
    sentinel_kwargs: dict[str, Any] = field(repr=False)
    min_other_sentinels: int = 0

    @property
    def display(self) -> str:
        """Which master from which sentinels, for a message (no credentials in it)."""
        hosts = ", ".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"master {self.master_name!r} from the sentinels {hosts}"


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"Redis option {name!r} must be a boolean, not {value!r}")


def _cert_reqs(value: Any) -> str:
    """``ssl_cert_reqs`` as redis-py wants it: ``none``, ``optional`` or ``required``."""
    if isinstance(value, ssl.VerifyMode):
        value = value.name
    found = _CERT_REQS.get(str(value).strip().lower())
    if found is None:
        raise ImproperlyConfigured(
            f"Redis option 'ssl_cert_reqs' must be one of required, optional, none; not {value!r}"
        )
    return found


def _db(url: str, value: Any) -> int:
    try:
        db = int(value)
    except (TypeError, ValueError):
        db = -1
    if db < 0:
        raise ImproperlyConfigured(f"{redact_url(url)!r}: the database must be a number >= 0")
    return db


def _options(url: str, query: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The connection options of the URL query overlaid by ``options``, converted and checked."""
    merged = {**query, **options}
    kwargs: dict[str, Any] = {}
    try:
        for name in _FLOATS:
            if merged.get(name) is not None:
                kwargs[name] = float(merged[name])
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{redact_url(url)!r}: {exc}") from None
    for name in _BOOLS:
        if merged.get(name) is not None:
            kwargs[name] = _bool(name, merged[name])
    for name in _STRINGS:
        if merged.get(name) is not None:
            kwargs[name] = str(merged[name])
    if merged.get("ssl_cert_reqs") is not None:
        kwargs["ssl_cert_reqs"] = _cert_reqs(merged["ssl_cert_reqs"])
    if merged.get("db") is not None:
        kwargs["db"] = _db(url, merged["db"])
    return kwargs


def _split(url: str) -> tuple[str, Any]:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ImproperlyConfigured(
            f"not a Redis URL: {redact_url(url)!r} (use redis://, rediss://, unix:// or "
            "redis+sentinel://)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ImproperlyConfigured(f"bad Redis URL {redact_url(url)!r}") from None
    return scheme.lower(), parts


def _credentials(parts: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password is not None:
        kwargs["password"] = unquote(parts.password)
    return kwargs


def parse_redis_url(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis`` from a URL and options.

    ``redis+sentinel://`` URLs are refused here: use :func:`parse_sentinel_url`, since a
    sentinel deployment needs a different client constructor.
    """
    scheme, parts = _split(url)
    if scheme in ("redis+sentinel", "sentinel"):
        raise ImproperlyConfigured(f"{redact_url(url)!r} is a sentinel URL: parse_sentinel_url")
    query = dict(parse_qsl(parts.query))
    kwargs = _credentials(parts)
    if scheme == "unix":
        if not parts.path:
            raise ImproperlyConfigured(f"{redact_url(url)!r}: unix:///path/to/redis.sock")
        kwargs["unix_socket_path"] = unquote(parts.path)
        kwargs["db"] = 0
    else:
        kwargs["host"] = parts.hostname or "127.0.0.1"
        kwargs["port"] = parts.port or DEFAULT_PORT
        path = parts.path.strip("/")
        kwargs["db"] = _db(url, path) if path else 0
    kwargs.update(_options(url, query, options or {}))
    if scheme == "rediss":
        kwargs["ssl"] = True
        kwargs.setdefault("ssl_cert_reqs", "required")
    elif any(key.startswith("ssl_") for key in kwargs):
        raise ImproperlyConfigured(
            f"{redact_url(url)!r}: TLS options given for a plain connection; use rediss://"
        )
    return kwargs


def parse_sentinel_url(url: str, options: Mapping[str, Any] | None = None) -> SentinelSpec:
    """The sentinels, master name and client arguments of a ``redis+sentinel://`` URL.

    Several sentinels are separated by ``;`` (each may repeat the scheme, as in Celery:
    ``redis+sentinel://a:26379;sentinel://b:26379/0``). The database, password and query come
    from the first part that has them. ``master_name`` (required) comes from the options or the
    query; ``sentinel_password`` authenticates to the sentinels if they need it.
    """
    opts = dict(options or {})
    sentinels: list[tuple[str, int]] = []
    kwargs: dict[str, Any] = {}
    query: dict[str, str] = {}
    for index, part in enumerate(p for p in url.split(";") if p.strip()):
        scheme, parts = _split(part if "://" in part else f"sentinel://{part}")
        if index == 0 and scheme != "redis+sentinel" and scheme != "sentinel":
            raise ImproperlyConfigured(f"not a sentinel URL: {redact_url(url)!r}")
        sentinels.append((parts.hostname or "127.0.0.1", parts.port or DEFAULT_SENTINEL_PORT))
        for key, value in _credentials(parts).items():
            kwargs.setdefault(key, value)
        path = parts.path.strip("/")
        if path and "db" not in kwargs:
            kwargs["db"] = _db(url, path)
        for key, value in parse_qsl(parts.query):
            query.setdefault(key, value)
    if not sentinels:
        raise ImproperlyConfigured("a redis+sentinel:// URL needs at least one sentinel")
    master_name = opts.pop("master_name", None) or query.pop("master_name", None)
    if not master_name:
        raise ImproperlyConfigured(
            f"{redact_url(url)!r}: name the master with broker_transport_options "
            "{'master_name': ...} (or ?master_name=)"
        )
    sentinel_password = opts.pop("sentinel_password", None) or query.pop("sentinel_password", None)
    extra_sentinel = opts.pop("sentinel_kwargs", None) or {}
    if not isinstance(extra_sentinel, Mapping):
        raise ImproperlyConfigured(
            f"{redact_url(url)!r}: option 'sentinel_kwargs' must be a mapping of connection "
            f"options for the sentinels, not {type(extra_sentinel).__name__}"
        )
    min_others = opts.pop("min_other_sentinels", None) or query.pop("min_other_sentinels", None)
    kwargs.setdefault("db", 0)
    kwargs.update(_options(url, query, opts))
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if sentinel_password:
        sentinel_kwargs["password"] = str(sentinel_password)
    sentinel_kwargs.update(extra_sentinel)
    return SentinelSpec(
        sentinels,
        str(master_name),
        kwargs,
        sentinel_kwargs,
        int(_number(url, "min_other_sentinels", min_others or 0)),
    )


def _number(url: str, name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise ImproperlyConfigured(f"{redact_url(url)!r}: {name} must be a number >= 0")
    return number


def is_sentinel_url(url: str) -> bool:
    """True for ``redis+sentinel://`` (and Celery's ``sentinel://``) URLs."""
    return url.split("://", 1)[0].lower() in ("redis+sentinel", "sentinel")


def _no_master(spec: SentinelSpec, exc: Exception) -> str:
    """redis-py's "no master" error, readable: its own text repeats each sentinel's client
    ``repr`` (a screenful per sentinel); ours names the master and the sentinels' addresses."""
    if "Error" in str(exc):  # redis-py lists the connection errors of the sentinels that failed
        why = "sentinels unreachable, or none monitors it"
    else:
        why = "the sentinels answered but know no healthy master by that name"
    return f"no {spec.display} ({why})"


def sentinel_manager(spec: SentinelSpec, *, asynchronous: bool = False) -> Any:
    """A redis-py ``Sentinel`` (``redis.asyncio``'s if ``asynchronous``) for ``spec``.

    Two differences from a bare one: its "no master" error says which master and which
    sentinels in one line, and a sentinel that does not answer is retried once at once, not
    with redis-py's default backoff (3 retries over ~7 s, per sentinel, per lookup): the next
    sentinel in the list is the fallback, and a lookup that outlasts the worker's
    ``broker_connection_timeout`` would fail as a bare timeout instead of saying why.
    """
    import redis.asyncio.retry as async_retry
    import redis.asyncio.sentinel as async_sentinel
    import redis.retry as sync_retry
    import redis.sentinel as sync_sentinel
    from redis.backoff import NoBackoff

    module: Any = async_sentinel if asynchronous else sync_sentinel
    retry: Any = (async_retry if asynchronous else sync_retry).Retry(NoBackoff(), 1)
    base: Any = module.Sentinel
    not_found: type[Exception] = module.MasterNotFoundError  # each module has its own
    options = {"retry": retry, **spec.sentinel_kwargs}

    if asynchronous:

        class AsyncSentinel(base):  # type: ignore[misc]
            async def discover_master(self, service_name: str) -> Any:
                try:
                    return await super().discover_master(service_name)
                except not_found as exc:
                    raise not_found(_no_master(spec, exc)) from None

        return AsyncSentinel(
            spec.sentinels, min_other_sentinels=spec.min_other_sentinels, sentinel_kwargs=options
        )

    class SyncSentinel(base):  # type: ignore[misc]
        def discover_master(self, service_name: str) -> Any:
            try:
                return super().discover_master(service_name)
            except not_found as exc:
                raise not_found(_no_master(spec, exc)) from None

    return SyncSentinel(
        spec.sentinels, min_other_sentinels=spec.min_other_sentinels, sentinel_kwargs=options
    )


def sync_client(url: str, options: Mapping[str, Any] | None = None, **extra: Any) -> Any:
    """A blocking ``redis.Redis`` for ``url`` (through the sentinels for a sentinel URL).

    ``extra`` overrides the parsed arguments (the broker passes its retry policy and timeouts).
    """
    import redis

    if is_sentinel_url(url):
        spec = parse_sentinel_url(url, options)
        return sentinel_manager(spec).master_for(
            spec.master_name, redis_class=redis.Redis, **{**spec.connection_kwargs, **extra}
        )
    return redis.Redis(**{**parse_redis_url(url, options), **extra})


def async_client(url: str, options: Mapping[str, Any] | None = None, **extra: Any) -> Any:
    """A ``redis.asyncio.Redis`` for ``url``, bound to the event loop that first uses it."""
    import redis.asyncio as aioredis

    if is_sentinel_url(url):
        spec = parse_sentinel_url(url, options)
        return sentinel_manager(spec, asynchronous=True).master_for(
            spec.master_name, redis_class=aioredis.Redis, **{**spec.connection_kwargs, **extra}
        )
    return aioredis.Redis(**{**parse_redis_url(url, options), **extra})


def password_of(url: str, options: Mapping[str, Any] | None = None) -> str | None:
    """The password a client for ``url`` would send, so that callers can scrub it from errors."""
    if is_sentinel_url(url):
        found = parse_sentinel_url(url, options).connection_kwargs.get("password")
    else:
        found = parse_redis_url(url, options).get("password")
    return str(found) if found else None


def database_of(url: str, options: Mapping[str, Any] | None = None) -> int:
    """The database number a client for ``url`` selects (kombu puts it in fanout channel names,
    since Redis pub/sub channels are shared by every database of a server)."""
    if is_sentinel_url(url):
        return int(parse_sentinel_url(url, options).connection_kwargs.get("db", 0))
    return int(parse_redis_url(url, options).get("db", 0))


__all__ = [
    "SentinelSpec",
    "async_client",
    "database_of",
    "is_sentinel_url",
    "parse_redis_url",
    "parse_sentinel_url",
    "password_of",
    "sentinel_manager",
    "sync_client",
]
