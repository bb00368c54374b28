"""Revokes on the Redis broker: the sorted set ``<key_prefix>revokes``, scored by expiry.

Members are :attr:`Revoke.key` (``id:<task id>``, ``root_id:<id>``, ``parent_id:<id>``), scores
their expiry as a UNIX time; ``ZADD GT`` keeps the later expiry of a revoke made twice. A read
drops what expired (``ZREMRANGEBYSCORE``) and takes the newest ``limit`` in the same
``MULTI``. The connection is the broker's (URL, credentials, TLS, sentinels, ``key_prefix``),
reached through :class:`~celeriac.transports.redis.shared.SharedRedis`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from celeriac.control.revokes import Revoke, RevokeStore
from celeriac.transports.redis.shared import SharedRedis

KEY = "revokes"


class RedisRevokeStore(RevokeStore):
    def __init__(self, url: str, options: dict[str, Any], expires: float = 0.0) -> None:
        self._redis = SharedRedis(url, options)  # a bad URL or option fails here, named
        self.key = self._redis.key(KEY)

    async def open(self) -> None:
        await self._redis.connect()

    async def close(self) -> None:
        await self._redis.close()

    async def add(self, revokes: Sequence[Revoke]) -> None:
        if not revokes:
            return
        await self.open()
        scores = {r.key: r.expires_at for r in revokes}
        with self._redis.errors("storing revokes"):
            await self._redis.client.zadd(self.key, scores, gt=True)

    async def live(self, limit: int) -> list[Revoke]:
        await self.open()
        now = time.time()
        with self._redis.errors("reading revokes"):
            async with self._redis.client.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(self.key, "-inf", now)
                pipe.zrevrangebyscore(
                    self.key, "+inf", f"({now}", start=0, num=limit, withscores=True
                )
                _, rows = await pipe.execute()
        return [Revoke.from_key(_text(member), float(score)) for member, score in rows]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
