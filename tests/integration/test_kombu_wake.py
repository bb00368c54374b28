"""The kombu layout's idle wait (:mod:`celeriac.transports.redis.kombu_wake`) on the real Redis:
woken by any client's push to a watched list (not a poll: the wait says it was woken), not by
a push elsewhere, and again after its connections are killed under it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis.kombu_transport import KombuRedisTransport
from celeriac.transports.redis.kombu_wake import ListWatch
from conftest import delete_redis_keys, require_service

pytestmark = [pytest.mark.redis]

URL = "redis://127.0.0.1:6379/7"


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("Redis", 6379)
    made = f"klwake-{uuid.uuid4().hex[:10]}:"
    yield made
    delete_redis_keys(URL, made)


def push_soon(key: str, delay: float = 0.2) -> threading.Thread:
    """LPUSH to ``key`` from another client after ``delay`` (a foreign producer)."""

    def push() -> None:
        time.sleep(delay)  # let the wait start tracking first (not needed for correctness)
        client = redis.Redis.from_url(URL)
        try:
            client.lpush(key, b"{}")
        finally:
            client.close()

    thread = threading.Thread(target=push)
    thread.start()
    return thread


async def watch_of(transport: KombuRedisTransport) -> ListWatch:
    return transport._watch(await transport._clients())


def kill_connections(names: tuple[str, str]) -> int:
    """CLIENT KILL the connections so named (one watch's, no one else's)."""
    client = redis.Redis.from_url(URL)
    try:
        killed = 0
        for info in client.client_list():
            if info.get("name") in names:
                killed += int(client.client_kill_filter(_id=info["id"]))
        return killed
    finally:
        client.close()


def test_a_foreign_push_wakes_a_wait_and_a_push_elsewhere_does_not(prefix: str) -> None:
    async def run() -> None:
        transport = RedisTransport(URL, layout="kombu", global_keyprefix=prefix)
        assert isinstance(transport, KombuRedisTransport)
        try:
            watch = await watch_of(transport)
            watched = transport.names.lists("q")
            elsewhere = push_soon(prefix + "other")
            started = time.monotonic()
            assert await watch.wait(watched, 0.6) is False  # the timeout, not the other key
            assert time.monotonic() - started >= 0.55
            await asyncio.to_thread(elsewhere.join, 5)
            pusher = push_soon(watched[2])  # a priority list of the queue
            started = time.monotonic()
            assert await watch.wait(watched, 30) is True
            assert time.monotonic() - started < 10
            await asyncio.to_thread(pusher.join, 5)
            assert await watch.wait(watched, 30) is True  # something waits there: at once
        finally:
            await transport.close()

    asyncio.run(run())


def test_a_wait_survives_its_connections_being_killed(prefix: str) -> None:
    async def run() -> None:
        transport = RedisTransport(URL, layout="kombu", global_keyprefix=prefix)
        assert isinstance(transport, KombuRedisTransport)
        try:
            watch = await watch_of(transport)
            watched = transport.names.lists("q")
            assert await watch.wait(watched, 0.05) is False  # connected and tracking
            waiting = asyncio.ensure_future(watch.wait(watched, 30))
            await asyncio.sleep(0.1)
            assert await asyncio.to_thread(kill_connections, watch.client_names) >= 1
            assert await waiting is True  # woken by the loss: its caller claims again
            deadline = time.monotonic() + 10
            woken = False
            pusher = None
            while not woken and time.monotonic() < deadline:  # connected again, after a pause
                if pusher is None:
                    pusher = push_soon(watched[0], delay=0.3)
                woken = await watch.wait(watched, 5)
            assert woken
            if pusher is not None:
                await asyncio.to_thread(pusher.join, 5)
        finally:
            await transport.close()

    asyncio.run(run())
