"""A client for state that layers above the broker keep on the broker's own Redis (beat's store).

Such state must live where the broker's keys live (same server, same ``key_prefix``, same
credentials; in kombu's layout under ``global_keyprefix`` too, as the broker's own keys there),
and reach it the way the broker does; and only the Redis packages may import
redis-py (an import contract). So this is the one door: :class:`SharedRedis` takes the broker URL
and ``broker_transport_options`` as the transport does, names keys under its prefix, registers
Lua scripts (reloaded by redis-py after a restart), and turns every redis-py error into a
:class:`~celeriac.errors.TransportError` naming the URL without its password.

The client is a ``redis.asyncio`` one, bound to the event loop that calls :meth:`connect`: a
store belongs to one loop (a thread that needs its own makes its own instance).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.transports.redis.kombu_layout import KOMBU_LAYOUT, layout_of
from celeriac.transports.redis.transport import DEFAULT_KEY_PREFIX
from celeriac.transports.redis.url import async_client, password_of
from celeriac.utils.urls import redact_url

#: ``broker_transport_options`` keys that are the broker's, not connection options.
_NOT_CONNECTION = (
    "key_prefix",
    "retries",
    "lease_seconds",
    "max_deliveries",
    "layout",
    "global_keyprefix",
    "visibility_timeout",
)


class SharedRedis:
    """The broker's Redis for a layer above the broker (see the module docstring)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.url = url
        self.prefix = str(options.get("key_prefix", DEFAULT_KEY_PREFIX))
        if layout_of(options) == KOMBU_LAYOUT:  # celeriac's own keys, as the broker's there
            self.prefix = str(options.get("global_keyprefix") or "") + self.prefix
        try:
            self._retries = max(int(options.get("retries", 1)), 0)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"broker_transport_options 'retries': {exc}") from None
        connection = {k: v for k, v in options.items() if k not in _NOT_CONNECTION}
        connection.setdefault("socket_connect_timeout", 5.0)
        connection.setdefault("socket_timeout", 30.0)
        self._connection = connection
        # parsing now makes a bad URL or option fail at start-up, naming it
        self._password = password_of(url, connection)
        self._client: Any = None

    def key(self, name: str) -> str:
        """``name`` under the broker's key prefix."""
        return self.prefix + name

    @property
    def client(self) -> Any:
        """The ``redis.asyncio.Redis`` client (after :meth:`connect`)."""
        if self._client is None:
            raise TransportError(f"Redis {redact_url(self.url)}: used before connect()")
        return self._client

    async def connect(self) -> None:
        """Open the client on the running loop and check the server answers."""
        if self._client is not None:
            return
        retry = AsyncRetry(NoBackoff(), self._retries)
        client = async_client(self.url, self._connection, retry=retry)
        with self.errors("connect"):
            try:
                await client.ping()
            except BaseException:
                await client.aclose()
                raise
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    def script(self, source: str) -> Any:
        """A registered Lua script: awaited as ``script(keys=[...], args=[...])``."""
        return self.client.register_script(source)

    @contextlib.contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """redis-py's errors as TransportError: a short reason, the URL redacted, no password."""
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self._password:
                reason = reason.replace(self._password, "***")
            raise TransportError(
                f"Redis {redact_url(self.url)}: {action} failed: {reason}"
            ) from exc


__all__ = ["SharedRedis"]
