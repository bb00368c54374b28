"""The Redis transport's blocking consumer (``transports/redis/fetcher.py``), on real servers:
claims with carried acks, a wait woken by a publish or ended by ``CLIENT UNBLOCK``, settling,
a lost connection, a forgotten script, a master turned replica, a forked child, dead letters."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer, own_server

from celeriac.errors import TransportError
from celeriac.routing import Queue
from celeriac.transports.base import DeadLetter, Delivery, Outgoing
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis import scripts as lua
from celeriac.transports.redis.fetcher import Fetcher
from conftest import json_task_message, require_service

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own: these tests flush scripts, kill clients and turn a server
    into a replica."""
    require_service("Redis", 6379)  # the redis-server binary comes with it
    yield from own_server(tmp_path)


def out(ident: str, queue: str = "q") -> Outgoing:
    return Outgoing(json_task_message(ident, "tests.redis", unique=False), "", queue)


def ready(url: str, *queues: str, sent: tuple[str, ...] = ()) -> RedisTransport:
    """A transport with ``queues`` declared and ``sent`` published to the first."""
    transport = RedisTransport(url)

    async def go() -> None:
        for queue in queues:
            await transport.declare_queue(Queue(queue))
        if sent:
            await transport.publish_batch([out(ident, queues[0]) for ident in sent])

    asyncio.run(go())
    return transport


def fetcher_of(transport: RedisTransport) -> Fetcher:
    fetcher = transport.fetcher()
    assert isinstance(fetcher, Fetcher)
    return fetcher


def interrupted(fetcher: Fetcher) -> bool:
    return fetcher.interrupted


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.decode().id for d in deliveries]


def stored(url: str, queue: str = "q") -> int:
    """How many messages of ``queue`` Redis still keeps (ready, leased or delayed)."""
    probe = redis.Redis.from_url(url)
    try:
        return int(probe.hlen(f"celeriac:q:{queue}:data"))
    finally:
        probe.close()


def test_claims_in_order_and_each_claim_carries_the_acks_of_the_last(server: RedisServer) -> None:
    transport = ready(server.url, "q", sent=("1", "2", "3", "4", "5"))
    fetcher = fetcher_of(transport)
    first = fetcher.fetch(["q"], 2, 0)
    assert ids(first) == ["1", "2"]
    second = fetcher.fetch(["q"], 2, 0, acks=first)
    assert ids(second) == ["3", "4"]
    assert stored(server.url) == 3  # the first two are gone, acked on the second claim's write
    third = fetcher.fetch(["q"], 2, 0, acks=second)
    assert ids(third) == ["5"]
    assert fetcher.fetch(["q"], 2, 0, acks=third) == []  # the acks go even when nothing comes
    assert stored(server.url) == 0
    fetcher.close()


def test_an_idle_wait_is_woken_by_a_publish_with_its_message(server: RedisServer) -> None:
    transport = ready(server.url, "q")
    fetcher = fetcher_of(transport)
    assert fetcher.fetch(["q"], 1, 0) == []  # found empty: the next fetch waits in BLPOP first
    started = time.monotonic()
    assert fetcher.fetch(["q"], 1, 0.2) == []  # nothing came: back after its timeout
    assert 0.15 < time.monotonic() - started < 5
    publisher = ready(server.url, "q")
    timer = threading.Timer(0.1, lambda: asyncio.run(publisher.publish(out("late"))))
    timer.start()
    started = time.monotonic()
    got = fetcher.fetch(["q"], 1, 20)
    assert ids(got) == ["late"]
    assert time.monotonic() - started < 10  # woken by the publish, not by the 20 s timeout
    timer.join()
    fetcher.ack(got)
    assert stored(server.url) == 0
    fetcher.close()


def test_a_wait_ended_by_client_unblock_returns_at_once(server: RedisServer) -> None:
    """Another connection (the worker, telling a child to stop) ends the wait with
    ``CLIENT UNBLOCK <id> ERROR``: the claim behind it runs at once, and the fetch returns."""
    transport = ready(server.url, "q")
    fetcher = fetcher_of(transport)
    assert fetcher.fetch(["q"], 1, 0) == []
    ident = fetcher.client_id
    assert ident is not None
    probe = redis.Redis.from_url(server.url)

    def unblock() -> None:
        while probe.client_unblock(ident, error=True) != 1:  # not blocked yet
            time.sleep(0.01)

    thread = threading.Thread(target=unblock)
    thread.start()
    started = time.monotonic()
    assert fetcher.fetch(["q"], 1, 30) == []
    assert interrupted(fetcher)
    assert time.monotonic() - started < 10
    thread.join()
    asyncio.run(transport.publish(out("after")))
    assert ids(fetcher.fetch(["q"], 1, 30)) == ["after"]  # the connection is still in step
    assert not interrupted(fetcher)
    probe.close()
    fetcher.close()


def test_requeue_reject_and_extend_settle_what_is_held(server: RedisServer) -> None:
    transport = ready(server.url, "q", sent=("1", "2", "3"))
    fetcher = fetcher_of(transport)
    one, two, three = fetcher.fetch(["q"], 3, 0)
    fetcher.requeue([one])
    assert ids(fetcher.fetch(["q"], 1, 0)) == ["1"]  # back at the head, delivered again
    fetcher.reject([two], "a test refused it")
    letters = asyncio.run(transport.dead_letters("q"))
    assert [(letter.reason, letter.queue) for letter in letters] == [("a test refused it", "q")]
    probe = redis.Redis.from_url(server.url)
    before = float(probe.zscore("celeriac:q:q:leased", three.tag[0]) or 0)
    fetcher.extend([three], 600)
    assert float(probe.zscore("celeriac:q:q:leased", three.tag[0]) or 0) > before + 500
    probe.close()
    fetcher.close()


def test_a_message_given_back_returns_to_its_own_place_in_the_queue(
    server: RedisServer,
) -> None:
    """``give_back`` (a claimed message that never ran) puts it back ahead of those published
    after it, where a requeue puts it behind them; its delivery count goes on (the next lease's
    token is new), and a give-back under a lease that is not held any more is skipped."""
    transport = ready(server.url, "q", sent=("1", "2", "3", "4"))
    fetcher = fetcher_of(transport)
    one, two = fetcher.fetch(["q"], 2, 0)
    fetcher.give_back([two])
    again, three = fetcher.fetch(["q"], 2, 0, acks=[one])
    assert ids([again, three]) == ["2", "3"]
    assert (again.delivery_count, three.delivery_count) == (2, 1)
    fetcher.requeue([again])
    assert ids(fetcher.fetch(["q"], 2, 0, acks=[three])) == ["4", "2"]  # a requeue: behind
    fetcher.give_back([two])  # the first lease's token: stale, nothing moves
    assert fetcher.fetch(["q"], 1, 0) == []
    fetcher.close()


def test_a_killed_connection_is_opened_again_and_the_claim_sent_again(
    server: RedisServer,
) -> None:
    transport = ready(server.url, "q", sent=("1", "2"))
    fetcher = fetcher_of(transport)
    first = fetcher.fetch(["q"], 1, 0)
    old_id = fetcher.client_id
    probe = redis.Redis.from_url(server.url)
    probe.client_kill_filter(_id=str(old_id))
    second = fetcher.fetch(["q"], 1, 0, acks=first)
    assert ids(second) == ["2"]
    assert fetcher.client_id not in (None, old_id)
    fetcher.ack(second)
    assert stored(server.url) == 0
    probe.close()
    fetcher.close()


def test_an_unreachable_server_fails_with_a_transport_error(server: RedisServer) -> None:
    transport = ready(server.url, "q", sent=("1",))
    fetcher = fetcher_of(transport)
    fetcher.fetch(["q"], 1, 0)
    server.stop()
    with pytest.raises(TransportError, match="get failed"):
        fetcher.fetch(["q"], 1, 0)
    fetcher.close()


def test_a_silent_server_times_out(server: RedisServer) -> None:
    transport = RedisTransport(server.url, socket_timeout=0.3)
    fetcher = fetcher_of(transport)
    fetcher.fetch(["q"], 1, 0)
    probe = redis.Redis.from_url(server.url)
    probe.client_pause(2000)
    started = time.monotonic()
    with pytest.raises(TransportError, match="TimeoutError"):
        fetcher.fetch(["q"], 1, 0)
    assert time.monotonic() - started < 1.9  # the read timeout, not the pause, ended it
    probe.client_unpause()
    probe.close()
    fetcher.close()


def test_scripts_redis_forgot_are_loaded_again_and_carried_acks_still_land(
    server: RedisServer,
) -> None:
    transport = ready(server.url, "q", sent=("1", "2", "3"))
    fetcher = fetcher_of(transport)
    first = fetcher.fetch(["q"], 1, 0)
    probe = redis.Redis.from_url(server.url)
    probe.script_flush()  # both the settle and the claim meet NOSCRIPT
    second = fetcher.fetch(["q"], 1, 0, acks=first)
    assert ids(second) == ["2"]
    assert stored(server.url) == 2
    probe.script_flush()
    fetcher.ack(second)
    assert stored(server.url) == 1
    probe.close()
    fetcher.close()


def test_a_master_turned_replica_is_let_go_and_named(tmp_path: Path, server: RedisServer) -> None:
    master = RedisServer(tmp_path / "master")
    (tmp_path / "master").mkdir()
    master.start()
    try:
        transport = ready(server.url, "q", sent=("1",))
        fetcher = fetcher_of(transport)
        fetcher.fetch(["q"], 1, 0)
        old_id = fetcher.client_id
        probe = redis.Redis.from_url(server.url)
        probe.replicaof("127.0.0.1", master.port)
        with pytest.raises(TransportError, match="READONLY"):
            fetcher.fetch(["q"], 1, 0)
        assert fetcher.client_id is None  # let go: the next call connects (and asks) again
        probe.replicaof("NO", "ONE")
        probe.close()
        assert old_id is not None
        fetcher.close()
    finally:
        master.stop()


def test_a_forked_child_opens_its_own_connection(server: RedisServer) -> None:
    transport = ready(server.url, "q", sent=("1", "2"))
    fetcher = fetcher_of(transport)
    first = fetcher.fetch(["q"], 1, 0)
    parent_id = fetcher.client_id
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: claims on a connection of its own, leaves the parent's alone
        try:
            got = fetcher.fetch(["q"], 1, 0, acks=first)
            ok = ids(got) == ["2"] and fetcher.client_id != parent_id
            fetcher.ack(got)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)
    assert stored(server.url) == 0
    assert fetcher.fetch(["q"], 1, 0) == []  # the parent's connection still works
    assert fetcher.client_id == parent_id
    fetcher.close()


def test_a_message_past_its_deliveries_is_dead_lettered_and_reported(server: RedisServer) -> None:
    transport = RedisTransport(server.url, lease_seconds=0.05, max_deliveries=1)
    asyncio.run(transport.declare_queue(Queue("q")))
    asyncio.run(transport.publish(out("poison")))
    reported: list[DeadLetter] = []
    transport.watch_dead_letters(reported.extend)
    fetcher = fetcher_of(transport)
    assert ids(fetcher.fetch(["q"], 1, 0)) == ["poison"]  # leased, never acked: it runs out
    time.sleep(0.1)
    assert fetcher.fetch(["q"], 1, 0) == []
    assert [letter.queue for letter in reported] == ["q"]
    assert "max_deliveries=1" in reported[0].reason
    fetcher.close()


def test_only_the_native_layout_has_a_fetcher(server: RedisServer) -> None:
    assert RedisTransport(server.url, layout="kombu").fetcher() is None
    assert lua.CLAIM  # the native claim script is the fetcher's


def test_an_ack_written_ahead_lands_before_its_reply_is_read(server: RedisServer) -> None:
    transport = ready(server.url, "q", sent=("1", "2"))
    fetcher = fetcher_of(transport)
    first = fetcher.fetch(["q"], 1, 0)
    fetcher.ack_ahead(first)
    probe = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + 10
    while stored(server.url) != 1:  # Redis ran it: nobody waited for its reply
        assert time.monotonic() < deadline, "the ack written ahead never landed"
        time.sleep(0.005)
    second = fetcher.fetch(["q"], 1, 0)  # reads the ack's reply, then the claim's
    assert ids(second) == ["2"]
    fetcher.ack(second)
    assert stored(server.url) == 0
    probe.close()
    fetcher.close()


def test_acks_written_ahead_on_a_lost_connection_are_sent_again(server: RedisServer) -> None:
    transport = ready(server.url, "q", sent=("1", "2"))
    fetcher = fetcher_of(transport)
    first = fetcher.fetch(["q"], 1, 0)
    probe = redis.Redis.from_url(server.url)
    probe.client_pause(1000, all=True)  # the write is buffered, never run on this connection
    fetcher.ack_ahead(first)
    probe.client_kill_filter(_id=str(fetcher.client_id))
    probe.client_unpause()
    second = fetcher.fetch(["q"], 1, 0)  # a new connection: the ack goes first
    assert ids(second) == ["2"]
    assert stored(server.url) == 1
    fetcher.ack(second)
    assert stored(server.url) == 0
    probe.close()
    fetcher.close()


def test_a_claim_that_takes_the_last_message_sends_the_next_fetch_to_wait_first(
    server: RedisServer,
) -> None:
    """The claim says when it left its queues empty (even when it took all it asked for), so
    the next fetch goes to its ``BLPOP`` at once: one claim after the wait, not an empty claim
    before it."""
    transport = ready(server.url, "q", sent=("1",))
    fetcher = fetcher_of(transport)
    assert ids(fetcher.fetch(["q"], 1, 0)) == ["1"]  # one asked, one taken: the last
    probe = redis.Redis.from_url(server.url)
    probe.config_resetstat()
    assert fetcher.fetch(["q"], 1, 0.05) == []
    stats = probe.info("commandstats")
    waits = stats["cmdstat_blpop"]["calls"]
    assert waits >= 1
    assert stats["cmdstat_evalsha"]["calls"] == waits  # each claim behind a wait, no other
    probe.close()
    fetcher.close()
