"""Waking an idle consumer of kombu's lists without popping from them: Redis's CLIENT TRACKING.

kombu's consumer waits in ``BRPOP``, which pops: the message is then in no record until the
consumer writes one, and a consumer that dies in between loses it. The kombu layout claims
with one script that pops *and* records, so its wait must not pop, and Redis has no blocking
command that waits on several lists without popping. It has key tracking: a connection with
``CLIENT TRACKING ON REDIRECT <id>`` makes Redis remember each key it reads, and publish the
key's name on ``__redis__:invalidate`` to connection ``<id>`` at the key's next change (any
client's, a Celery producer's ``LPUSH`` included), once. So, per event loop:

* a subscriber connection (RESP2, ``SUBSCRIBE __redis__:invalidate``) read by a task that
  wakes the waits whose lists were named (all of them when Redis says "flush");
* a tracking connection, on which a wait reads its lists with ``EXISTS``: non-zero means
  messages came since the claim that came back short (claim again at once); zero, and the
  lists are now tracked, so the first change to any of them wakes the wait.

A wait is registered before its ``EXISTS``, so no change is missed between the two. A broken
connection wakes every wait (they claim again) and both connections are made again at the next
wait, after a back-off; meanwhile, and on a server without tracking (before Redis 6), a wait
sleeps at most :data:`FALLBACK` seconds: a poll, logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from celeriac.transports.transient import backoff

if TYPE_CHECKING:
    from celeriac.transports.redis.transport import RedisTransport

logger = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"
#: The longest a wait sleeps when it cannot be woken (no tracking, or a broken connection).
FALLBACK = 0.25
#: Seconds of silence after which the subscriber connection is probed with PING.
PROBE = 15.0


@dataclass(eq=False, slots=True)
class _Wait:
    keys: frozenset[bytes]
    woken: asyncio.Future[None]

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


class ListWatch:
    """One event loop's wake-ups for kombu-layout consumers (see the module docstring)."""

    def __init__(self, transport: RedisTransport) -> None:
        self._transport = transport
        self._waits: set[_Wait] = set()
        self._lock = asyncio.Lock()  # the tracking connection serves one EXISTS at a time
        self._sub_client: Any = None
        self._sub_conn: Any = None
        self._track_client: Any = None
        self._track_conn: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._pause = 0.0
        self._unsupported = False
        #: The names of the two connections in ``CLIENT LIST`` (subscriber, tracking).
        self.client_names: tuple[str, str] = ("", "")

    async def wait(self, keys: Sequence[str], timeout: float) -> bool:
        """Return when one of ``keys`` may have changed (True) or after ``timeout`` (False)."""
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        if not await self._ready():
            await asyncio.sleep(min(timeout, FALLBACK))
            return False
        wait = _Wait(frozenset(key.encode() for key in keys), loop.create_future())
        self._waits.add(wait)
        try:
            if await self._exists(keys):
                return True
            try:
                async with asyncio.timeout(timeout):
                    await wait.woken
            except TimeoutError:
                return False
            return True
        finally:
            self._waits.discard(wait)

    async def _exists(self, keys: Sequence[str]) -> bool:
        """Read (and so track) ``keys``; True when one holds something, or on a broken link
        (the caller claims again)."""
        async with self._lock:
            conn = self._track_conn
            if conn is None:
                return True
            try:
                await conn.send_command("EXISTS", *keys)
                found = await conn.read_response(timeout=PROBE)
                if found is None:
                    raise redis.TimeoutError(f"no answer to EXISTS in {PROBE} s")
                return bool(found)
            except (redis.RedisError, OSError) as exc:
                await self._broken(exc)
                return True

    async def _ready(self) -> bool:
        """Both connections up (made now if needed); False while they cannot be."""
        if self._reader is not None:
            return True
        loop = asyncio.get_running_loop()
        if self._unsupported or loop.time() < self._retry_at:
            return False
        try:
            await self._connect()
        except redis.ResponseError as exc:  # no CLIENT TRACKING on this server
            self._unsupported = True
            await self._release()
            logger.warning(
                "Redis %s has no CLIENT TRACKING (%s): idle kombu-layout consumers poll every %s s",
                self._transport,
                exc,
                FALLBACK,
            )
            return False
        except (redis.RedisError, OSError) as exc:
            await self._broken(exc)
            return False
        self._pause = 0.0
        self._reader = loop.create_task(self._read_loop())
        return True

    async def _connect(self) -> None:
        name = uuid.uuid4().hex[:12]
        self.client_names = (f"celeriac-watch-{name}", f"celeriac-track-{name}")
        self._sub_client = self._transport.subscriber_client(self.client_names[0])
        self._sub_conn = await self._sub_client.connection_pool.get_connection()
        await self._sub_conn.send_command("CLIENT", "ID")
        ident = await self._sub_conn.read_response(timeout=PROBE)
        await self._sub_conn.send_command("SUBSCRIBE", CHANNEL)
        confirmed = await self._sub_conn.read_response(timeout=PROBE)
        if not confirmed or confirmed[0] != b"subscribe":
            raise redis.ConnectionError(f"no confirmation of SUBSCRIBE {CHANNEL}")
        self._track_client = self._transport.subscriber_client(self.client_names[1])
        self._track_conn = await self._track_client.connection_pool.get_connection()
        await self._track_conn.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", ident)
        await self._track_conn.read_response(timeout=PROBE)

    async def _read_loop(self) -> None:
        probing = False
        conn = self._sub_conn
        try:
            while True:
                reply = await conn.read_response(timeout=PROBE)
                if reply is None:
                    if probing:
                        raise redis.TimeoutError(f"no answer to PING in {PROBE} s")
                    await conn.send_command("PING")
                    probing = True
                    continue
                probing = False
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    self._invalidated(reply[2])
        except (redis.RedisError, OSError) as exc:
            self._reader = None  # this task ends: the next wait connects again
            await self._broken(exc)

    def _invalidated(self, keys: Any) -> None:
        """Wake the waits on ``keys`` (every wait when Redis flushed its tracking: ``None``)."""
        named = None if keys is None else {bytes(key) for key in keys}
        for wait in list(self._waits):
            if named is None or not wait.keys.isdisjoint(named):
                wait.wake()

    async def _broken(self, exc: BaseException) -> None:
        """Drop both connections, wake every wait, and back off before connecting again."""
        if self._sub_conn is not None or self._track_conn is not None:
            logger.warning("kombu-layout wake-ups lost their Redis connection: %s", exc)
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        await self._release()
        self._pause = backoff(self._pause, 0.1, 5.0)
        self._retry_at = asyncio.get_running_loop().time() + self._pause
        for wait in list(self._waits):
            wait.wake()

    async def _release(self) -> None:
        conns = (self._sub_conn, self._track_conn)
        clients = (self._sub_client, self._track_client)
        self._sub_conn = self._track_conn = self._sub_client = self._track_client = None
        for conn in conns:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def aclose(self) -> None:
        """Stop: the connections are closed and every wait returns."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self._release()
        for wait in list(self._waits):
            wait.wake()


__all__ = ["FALLBACK", "ListWatch"]
