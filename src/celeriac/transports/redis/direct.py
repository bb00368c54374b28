"""Transient messages to a *direct* exchange on Redis, in kombu's list layout: remote-control
replies, which Celery's tools expect there.

kombu routes a fanout exchange through pub/sub but a direct one through lists: a binding is a
member ``<routing key>\\x06\\x16\\x06\\x16<queue>`` of the set ``_kombu.binding.<exchange>``, and a
publisher LPUSHes the envelope onto every queue whose member names its key. Celery's
``inspect`` and ``control`` gather replies that way (``reply.celery.pidbox``, one key per client),
so a celeriac worker's reply reaches ``celery inspect``, and a Celery worker's reply reaches a
celeriac client, only through these lists. Both ends speak it here (names under kombu's
``global_keyprefix``):

* a listener binds ``<uuid4>.<exchange>`` with a member per pattern, reads it with ``BRPOP`` on
  a connection of its own (the four priority lists kombu may push to, highest first), binds again
  every :data:`REBIND` seconds (kombu 5.7 may sweep a whole binding table whose deadline passed),
  and on close removes its members and deletes its lists: nothing stays (an empty set is no key);
* a publish is one script call per chunk (:data:`PUSH`): read the table, LPUSH the envelopes onto
  each queue bound with the key, trimmed to :data:`CAP` messages and set to expire after
  ``transient_retention`` (60 s). With no binding nothing is written; a queue whose listener died
  without unbinding holds at most :data:`CAP` messages and disappears once publishes stop
  (a reply goes only to the client that asked, so they do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from celeriac.routing import Exchange
from celeriac.transports.transient import DEFAULT_BUFFER, InboxListener, backoff

if TYPE_CHECKING:
    from celeriac.transports.redis.transport import RedisTransport

logger = logging.getLogger(__name__)

SEP = "\x06\x16"
#: kombu's priority steps: a message of priority p > 0 goes to ``<queue>\x06\x16<step>``.
PRIORITY_STEPS = (0, 3, 6, 9)
#: How many messages a queue keeps at most (its oldest trimmed), listener alive or not.
CAP = DEFAULT_BUFFER
#: Seconds between a listener's re-bindings, and a BRPOP's longest wait.
REBIND = 10.0
_CHUNK = 500  # envelopes per script call (Lua's unpack has a stack limit)

#: ARGV: table key, routing key, key prefix, ttl ms, cap, envelopes... -> queues reached.
PUSH = """
local members = redis.call('SMEMBERS', ARGV[1])
local sep = '\\6\\22'
local reached = 0
for _, member in ipairs(members) do
  local first = string.find(member, sep, 1, true)
  if first and string.sub(member, 1, first - 1) == ARGV[2] then
    local second = string.find(member, sep, first + 2, true)
    if second then
      local queue = ARGV[3] .. string.sub(member, second + 2)
      redis.call('LPUSH', queue, unpack(ARGV, 6))
      redis.call('LTRIM', queue, 0, tonumber(ARGV[5]) - 1)
      redis.call('PEXPIRE', queue, ARGV[4])
      reached = reached + 1
    end
  end
end
return reached
"""


def table_key(prefix: str, exchange: str) -> str:
    """kombu's binding table of ``exchange`` (``prefix``: kombu's ``global_keyprefix``)."""
    return f"{prefix}_kombu.binding.{exchange}"


def member(routing_key: str, queue: str) -> str:
    """A binding of ``queue`` with ``routing_key`` as kombu writes it (no pattern: direct)."""
    return SEP.join((routing_key, "", queue))


def priority_lists(prefix: str, queue: str) -> list[str]:
    """The lists kombu may push ``queue``'s messages to, in its order (0 first: highest)."""
    return [prefix + queue + (f"{SEP}{step}" if step else "") for step in PRIORITY_STEPS]


async def publish(
    client: Any,
    script: Any,
    prefix: str,
    exchange: str,
    routing_key: str,
    wires: Sequence[bytes],
    retention: float,
) -> int:
    """LPUSH ``wires`` onto the queues bound to ``exchange`` with ``routing_key``; how many."""
    reached = 0
    ttl = max(1, int(retention * 1000))
    for start in range(0, len(wires), _CHUNK):
        chunk = wires[start : start + _CHUNK]
        args = [table_key(prefix, exchange), routing_key, prefix, ttl, CAP, *chunk]
        reached = int(await script(args=args, client=client))
        if not reached:
            break  # nobody bound: the rest would reach nobody too
    return reached


class DirectListener(InboxListener[bytes]):
    """A kombu-style queue bound to a direct exchange, read with BRPOP (see module doc)."""

    def __init__(
        self,
        transport: RedisTransport,
        exchange: Exchange,
        patterns: Sequence[str],
        buffer: int,
    ) -> None:
        super().__init__(exchange, patterns, buffer)
        self.transport = transport
        self.queue = f"{uuid.uuid4()}.{exchange.name}"
        self.client_name = f"celeriac-listener-{uuid.uuid4().hex[:12]}"
        prefix = transport.global_keyprefix
        self._table = table_key(prefix, exchange.name)
        self._members = [member(key, self.queue) for key in dict.fromkeys(self.patterns)]
        self._lists = priority_lists(prefix, self.queue)
        self._client: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        if self._reader is not None:
            return
        self._client = self.transport.subscriber_client(self.client_name)
        try:
            with self.transport.errors("binding"):
                await self._client.sadd(self._table, *self._members)
        except BaseException:
            await self._client.aclose()
            self._client = None
            raise
        self._loop = asyncio.get_running_loop()
        self._reader = self._loop.create_task(self._read_loop())
        self.transport.opened(self)

    async def _read_loop(self) -> None:
        pause, outage = 0.0, False
        loop = asyncio.get_running_loop()
        bound_at = loop.time()
        while True:
            try:
                if loop.time() - bound_at >= REBIND or outage:
                    await self._client.sadd(self._table, *self._members)
                    bound_at = loop.time()
                    if outage:
                        logger.warning("listener on %r bound again", self.exchange.name)
                    pause, outage = 0.0, False
                found = await self._client.brpop(self._lists, timeout=REBIND)
                if found is None:
                    continue
                key, first = found
                rest = await self._client.rpop(key, self.buffer) or []
                self.inbox.put_many([bytes(first), *(bytes(x) for x in rest)])
            except (redis.RedisError, OSError) as exc:
                if not outage:
                    logger.warning(
                        "listener on %r lost its Redis connection (%s); binding again",
                        self.exchange.name,
                        exc,
                    )
                outage = True
                pause = backoff(pause, 0.1, 5.0)
                await asyncio.sleep(pause)  # back-off before reconnecting

    async def close(self) -> None:
        """Unbind, stop reading and delete the queue's lists."""
        self.inbox.close()
        reader, self._reader = self._reader, None
        if reader is None:
            return
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self._release()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(reader.cancel)
            asyncio.run_coroutine_threadsafe(self._release(), self._loop)
        self.transport.closed(self)

    async def _release(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            # the cancelled BRPOP's connection was dropped; these go on a fresh one
            await client.srem(self._table, *self._members)
            await client.delete(*self._lists)
        except (redis.RedisError, OSError) as exc:
            logger.warning("listener on %r could not unbind: %s", self.exchange.name, exc)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()


__all__ = ["CAP", "PUSH", "DirectListener", "member", "priority_lists", "publish", "table_key"]
