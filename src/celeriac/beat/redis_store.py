"""Beat's state on the Redis broker (``redis://``, ``rediss://``, ``unix://``, sentinels).

Keys under the broker's ``key_prefix`` (``P``), so each app's beats share exactly the broker
namespace its workers use:

* ``P beat:leader``  the leading node's name, with a ``PX`` expiry: the lease. Taken with
  ``SET NX PX``, renewed by a compare-and-``PEXPIRE`` and given up by a compare-and-``DEL``
  (one Lua call each, so a node can only renew or drop a lease it still holds);
* ``P beat:entries`` hash: entry name -> the entry as JSON;
* ``P beat:runs``    hash: entry name -> the last slot fired, a UNIX time as text;
* ``P beat:version`` a counter, ``INCR``-ed in the same ``MULTI`` as every entry change.

Time is Redis's own: a lease ends by the server's expiry, whatever the beats' clocks say.

The connection is the broker's (URL, credentials, TLS, sentinels and ``retries`` from
``broker_transport_options``) through :class:`~celeriac.transports.redis.shared.SharedRedis`;
its errors are :class:`~celeriac.errors.TransportError` naming the URL without a password. A
store belongs to the event loop that opened it.

Build one with ``RedisBeatStore(url, options)`` or :func:`open_store` from an app; then
``await store.open()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from celeriac.beat.store import BeatStore
from celeriac.transports.redis.shared import SharedRedis

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac

# KEYS: leader. ARGV: node, ttl in ms. 1 when the node holds the lease now.
LEAD = r"""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# KEYS: leader. ARGV: node.
RESIGN = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: runs. ARGV: name, at, name, at... A record never moves back (see record_runs).
RECORD_RUNS = r"""
for i = 1, #ARGV, 2 do
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  if not stored or tonumber(ARGV[i + 1]) > tonumber(stored) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


class RedisBeatStore(BeatStore):
    """:class:`~celeriac.beat.store.BeatStore` on the broker's Redis (see the module)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self._redis = SharedRedis(url, options)  # a bad URL or option fails here, named
        self._leader = self._redis.key("beat:leader")
        self._entries = self._redis.key("beat:entries")
        self._runs = self._redis.key("beat:runs")
        self._version = self._redis.key("beat:version")
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        await self._redis.connect()
        for name, source in (("lead", LEAD), ("resign", RESIGN), ("runs", RECORD_RUNS)):
            self._scripts[name] = self._redis.script(source)

    async def close(self) -> None:
        await self._redis.close()
        self._scripts.clear()

    # -- the lease ----------------------------------------------------------------------------
    async def lead(self, node: str, ttl: float) -> bool:
        ttl_ms = max(1, math.ceil(ttl * 1000))
        with self._redis.errors("beat lead"):
            return bool(await self._scripts["lead"](keys=[self._leader], args=[node, ttl_ms]))

    async def resign(self, node: str) -> None:
        with self._redis.errors("beat resign"):
            await self._scripts["resign"](keys=[self._leader], args=[node])

    # -- entries and runs ---------------------------------------------------------------------
    async def version(self) -> int:
        with self._redis.errors("beat version"):
            value = await self._redis.client.get(self._version)
        return int(value) if value is not None else 0

    async def entries(self) -> dict[str, dict[str, Any]]:
        with self._redis.errors("beat entries"):
            stored = await self._redis.client.hgetall(self._entries)
        return {bytes(name).decode(): orjson.loads(blob) for name, blob in stored.items()}

    async def put_entries(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if not entries:
            return
        mapping = {str(name): orjson.dumps(dict(entry)) for name, entry in entries.items()}
        with self._redis.errors("beat put_entries"):
            async with self._redis.client.pipeline(transaction=True) as pipe:
                pipe.hset(self._entries, mapping=mapping)
                pipe.incr(self._version)
                await pipe.execute()

    async def delete_entries(self, names: Iterable[str]) -> None:
        gone = [str(name) for name in names]
        if not gone:
            return
        with self._redis.errors("beat delete_entries"):
            async with self._redis.client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._entries, *gone)
                pipe.hdel(self._runs, *gone)
                pipe.incr(self._version)
                await pipe.execute()

    async def runs(self) -> dict[str, float]:
        with self._redis.errors("beat runs"):
            stored = await self._redis.client.hgetall(self._runs)
        return {bytes(name).decode(): float(at) for name, at in stored.items()}

    async def record_runs(self, runs: Mapping[str, float]) -> None:
        """Record each entry's last slot; a record never moves back (a paused old leader that
        records an earlier slot late cannot make the next leader fire a slot again)."""
        if not runs:
            return
        args: list[str] = []
        for name, at in runs.items():
            args += (str(name), repr(float(at)))
        with self._redis.errors("beat record_runs"):
            await self._scripts["runs"](keys=[self._runs], args=args)


def open_store(app: Celeriac) -> RedisBeatStore:
    """The store on ``app``'s Redis broker (not yet opened: ``await store.open()``)."""
    return RedisBeatStore(app.broker_url, app.conf.broker_transport_options)


__all__ = ["RedisBeatStore", "open_store"]
