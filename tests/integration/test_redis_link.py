"""The Redis transport's pipelined link (``transports/redis/link.py``), on real servers: replies
in order, a lost connection and a silent one fail their calls and the transport opens a new
link, a forgotten script is loaded again, and a master turned replica is let go."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, own_server

from celeriac.errors import TransportError
from celeriac.routing import Queue
from celeriac.transports.base import Outgoing
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis import scripts as lua
from celeriac.transports.redis.link import Link
from celeriac.transports.redis.resp import pack_command
from conftest import json_task_message, require_service

pytestmark = pytest.mark.timeout(60)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own: these tests flush scripts, kill clients and turn a server
    into a replica."""
    require_service("Redis", 6379)  # the redis-server binary comes with it
    yield from own_server(tmp_path)


def out(ident: str) -> Outgoing:
    return Outgoing(json_task_message(ident, "tests.redis", unique=False), "", "q")


async def link_of(transport: RedisTransport) -> Link:
    return await transport._link(await transport._clients())


def test_calls_written_back_to_back_get_their_own_replies_in_order(server: RedisServer) -> None:
    async def go() -> None:
        transport = RedisTransport(server.url)
        link = await link_of(transport)
        first = link.call(pack_command(("SET", "k", "v")) + pack_command(("GET", "k")), 2)
        second = link.call(pack_command(("ECHO", "two")))
        third = link.call(pack_command(("INCRBY", "n", 5)) + pack_command(("NOPE",)), 2)
        assert await first == [b"OK", b"v"]
        assert await second == [b"two"]
        incremented, refused = await third
        assert incremented == 5
        assert isinstance(refused, redis.ResponseError)  # handed back, not raised
        assert "unknown command" in str(refused)
        await transport.close()
        assert link.closed

    run(go())


def test_a_killed_connection_fails_its_calls_and_the_next_one_opens_a_new_link(
    server: RedisServer,
) -> None:
    async def go() -> None:
        transport = RedisTransport(server.url)
        await transport.declare_queue(Queue("q"))
        await transport.publish(out("1"))
        link = await link_of(transport)
        waiting = link.call(pack_command(("BLPOP", "nothing", 0)))  # blocks until killed
        probe = redis.Redis.from_url(server.url)
        for client in probe.client_list():
            if client["cmd"] == "blpop":
                probe.client_kill_filter(_id=client["id"])
        probe.close()
        with pytest.raises(redis.ConnectionError):
            await waiting
        assert link.closed
        got = await transport.get(["q"], 10, timeout=1)  # a claim on a new link
        assert [d.decode().id for d in got] == ["1"]
        assert (await link_of(transport)) is not link
        await transport.ack(got)
        assert await transport.size("q") == 0
        await transport.close()

    run(go())


def test_a_silent_server_fails_the_call_after_the_timeout_and_closes_the_link(
    server: RedisServer,
) -> None:
    async def go() -> None:
        transport = RedisTransport(server.url)
        clients = await transport._clients()
        link = await Link.open(clients.client.connection_pool, timeout=0.2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(redis.TimeoutError, match="no reply from Redis in time"):
            await link.call(pack_command(("BLPOP", "nothing", 0)))
        assert 0.15 < asyncio.get_running_loop().time() - started < 5
        assert link.closed
        with pytest.raises(redis.ConnectionError):  # a closed link refuses at once
            await link.call(pack_command(("PING",)))
        await transport.close()

    run(go())


def test_a_script_redis_forgot_is_loaded_again(server: RedisServer) -> None:
    """Redis restarted (here: SCRIPT FLUSH): the claim and the settle meet NOSCRIPT on the
    link and run again through redis-py, which loads them."""

    async def go() -> None:
        transport = RedisTransport(server.url)
        await transport.declare_queue(Queue("q"))
        await transport.publish_batch([out("1"), out("2")])
        assert len(await transport.get(["q"], 1, timeout=1)) == 1  # the scripts are loaded
        probe = redis.Redis.from_url(server.url)
        probe.script_flush()
        got = await transport.get(["q"], 1, timeout=1)
        assert [d.decode().id for d in got] == ["2"]
        probe.script_flush()
        await transport.ack(got)
        assert int(probe.hlen("celeriac:q:q:data")) == 1  # only the first, never settled
        probe.close()
        await transport.close()

    run(go())


def test_a_master_turned_replica_is_let_go_and_named(tmp_path: Path, server: RedisServer) -> None:
    """A failover made the master a replica: its READONLY refusal closes the link (the next
    one asks again, as redis-py's Sentinel connection does) and the error says why."""
    master = RedisServer(tmp_path / "master")
    (tmp_path / "master").mkdir()
    master.start()

    async def go() -> None:
        transport = RedisTransport(server.url)
        await transport.declare_queue(Queue("q"))
        await transport.publish(out("1"))
        link = await link_of(transport)
        probe = redis.Redis.from_url(server.url)
        probe.replicaof("127.0.0.1", master.port)
        with pytest.raises(TransportError, match="READONLY"):  # its sync dropped the scripts
            await transport.get(["q"], 1, timeout=0)
        assert link.closed
        while probe.info("replication")["master_link_status"] != "up":
            await asyncio.sleep(0.02)
        probe.script_load(lua.CLAIM)  # now the claim itself meets the refusal
        link = await link_of(transport)
        with pytest.raises(TransportError, match="READONLY"):
            await transport.get(["q"], 1, timeout=0)
        assert link.closed
        probe.close()
        await transport.close()

    try:
        run(go())
    finally:
        master.stop()
