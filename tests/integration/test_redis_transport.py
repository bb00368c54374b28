"""The Redis broker beyond the contract suite: wake-up latency, cancellation, topology seen by
several instances, threads, URL parsing, password redaction, and a Redis restart survived.

The shared server on 127.0.0.1:6379 is used with a unique key prefix per test in database 15
(every key under it is deleted afterwards); the restart test runs its own ``redis-server``.
Figures measured here are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer

from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.base import Delivery, Outgoing
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis import scripts as lua
from celeriac.transports.redis.url import (
    is_sentinel_url,
    parse_redis_url,
    parse_sentinel_url,
    password_of,
)
from celeriac.transports.topology import max_deliveries_reason
from conftest import delete_redis_keys, json_task_message, require_service
from suite_rules import require_tool

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/15"


def run(coro: Coroutine[Any, Any, None], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def out(
    label: str, routing_key: str = "q", exchange: str = "", due_at: float | None = None
) -> Outgoing:
    message = json_task_message(label, "tests.redis", unique=False)
    return Outgoing(message, exchange, routing_key, due_at)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.decode().id for d in deliveries]


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix private to the test on the shared server; its keys are deleted afterwards."""
    require_service("Redis", 6379)
    name = f"celeriac-it:{uuid.uuid4().hex[:12]}:"
    yield name
    delete_redis_keys(URL, name)


def _own_ports() -> set[int]:
    """The local TCP ports of this process's sockets (its fds' inodes found in /proc/net)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def blocked_clients(client: redis.Redis) -> int:
    """This process's clients blocked on the server: the other test workers block on the same
    Redis (a count over the whole server moved under a test that took it as its baseline)."""
    ports = _own_ports()
    return sum(
        1
        for entry in client.client_list()
        if "b" in entry["flags"] and int(entry["addr"].rsplit(":", 1)[1]) in ports
    )


async def until_blocked(client: redis.Redis, at_least: int = 1, limit: float = 5.0) -> None:
    """Wait until ``at_least`` clients block on the server (a get() waiting in BLPOP)."""
    deadline = time.monotonic() + limit
    while blocked_clients(client) < at_least:
        assert time.monotonic() < deadline, "get() never blocked in BLPOP"
        await asyncio.sleep(0.001)


# -- waking, blocking, CPU ---------------------------------------------------------------------
def test_an_idle_get_wakes_on_a_publish_from_another_connection(prefix: str) -> None:
    async def go() -> None:
        consumer = RedisTransport(URL, key_prefix=prefix)
        producer = RedisTransport(URL, key_prefix=prefix)
        await consumer.declare_queue(Queue("q"))
        probe = redis.Redis.from_url(URL)
        baseline = blocked_clients(probe)
        latencies: list[float] = []
        for i in range(30):
            waiting = asyncio.ensure_future(consumer.get(["q"], 1, timeout=10))
            await until_blocked(probe, baseline + 1)
            sent = time.perf_counter()
            await asyncio.to_thread(producer.publish_sync, [out(f"m{i}")])
            got = await waiting
            latencies.append(time.perf_counter() - sent)
            assert ids(got) == [f"m{i}"]
            await consumer.ack(got)
        probe.close()
        p50 = statistics.median(latencies)
        print(
            f"\nwake-up latency (publish from another connection to get() returning): "
            f"p50 {p50 * 1000:.3f} ms, max {max(latencies) * 1000:.3f} ms"
        )
        assert p50 < 0.05
        await consumer.close()
        await producer.close()

    run(go())


def test_two_idle_consumers_both_wake_for_a_batch_of_two(prefix: str) -> None:
    """A publish wakes one waiter; its claim leaves work behind and wakes the next."""

    async def go() -> None:
        first = RedisTransport(URL, key_prefix=prefix)
        second = RedisTransport(URL, key_prefix=prefix)
        await first.declare_queue(Queue("q"))
        probe = redis.Redis.from_url(URL)
        baseline = blocked_clients(probe)
        waiting = [asyncio.ensure_future(t.get(["q"], 1, timeout=10)) for t in (first, second)]
        await until_blocked(probe, baseline + 2)
        started = time.monotonic()
        await first.publish_batch([out("a"), out("b")])
        got = await asyncio.gather(*waiting)
        assert sorted(ids(got[0]) + ids(got[1])) == ["a", "b"]
        assert time.monotonic() - started < 1.0
        probe.close()
        for transport, deliveries in zip((first, second), got, strict=True):
            await transport.ack(deliveries)
            await transport.close()

    run(go())


def test_a_get_after_a_short_claim_waits_at_once_instead_of_claiming_first(prefix: str) -> None:
    """A claim that came back short emptied the queue: the next get() starts in BLPOP (its claim
    rides behind it), so an idle worker pays one round trip per task, not two."""

    async def go() -> None:
        consumer = RedisTransport(URL, key_prefix=prefix)
        await consumer.declare_queue(Queue("q"))
        probe = redis.Redis.from_url(URL)
        baseline = blocked_clients(probe)
        # the first task of an idle worker: woken by the publish (which also takes its token)
        waiting = asyncio.ensure_future(consumer.get(["q"], 10, timeout=10))
        await until_blocked(probe, baseline + 1)
        await asyncio.to_thread(consumer.publish_sync, [out("first")])
        got = await waiting
        assert ids(got) == ["first"]  # 1 of 10: short
        await consumer.ack(got)
        claims: list[object] = []
        claim = consumer._claim

        async def counting(*args: Any, **kwargs: Any) -> Any:
            claims.append(args[3] if len(args) > 3 else kwargs.get("wake"))
            return await claim(*args, **kwargs)

        consumer._claim = counting  # type: ignore[method-assign]
        waiting = asyncio.ensure_future(consumer.get(["q"], 10, timeout=10))
        await until_blocked(probe, baseline + 1)
        await asyncio.to_thread(consumer.publish_sync, [out("second")])
        got = await waiting
        assert ids(got) == ["second"]
        assert len(claims) == 1 and claims[0] is not None  # one claim, sent behind the BLPOP
        await consumer.ack(got)
        probe.close()
        await consumer.close()

    run(go())


def test_a_get_after_a_short_claim_still_wakes_when_a_delay_falls_due(prefix: str) -> None:
    """The short claim says when the next delayed message is due, and the BLPOP that follows
    waits no longer than that."""

    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix)
        await transport.declare_queue(Queue("q"))
        due = time.time() + 0.5
        await transport.publish_batch([out("now"), out("soon", due_at=due)])
        got = await transport.get(["q"], 10, timeout=5)
        assert ids(got) == ["now"]
        await transport.ack(got)
        started = time.monotonic()
        got = await transport.get(["q"], 10, timeout=5)
        assert ids(got) == ["soon"]
        assert time.time() >= due - 0.01
        assert time.monotonic() - started < 2.0  # not the whole timeout
        await transport.ack(got)
        await transport.close()

    run(go())


def test_an_idle_get_uses_almost_no_cpu(prefix: str) -> None:
    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix)
        await transport.declare_queue(Queue("q"))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before, started = usage.ru_utime + usage.ru_stime, time.monotonic()
        while time.monotonic() - started < 3.0:
            assert await transport.get(["q"], 10, timeout=1.0) == []
        usage = resource.getrusage(resource.RUSAGE_SELF)
        share = (usage.ru_utime + usage.ru_stime - cpu_before) / (time.monotonic() - started)
        print(f"\nidle get(): {share * 100:.3f}% of one CPU")
        assert share < 0.05
        await transport.close()

    run(go())


def test_a_countdown_longer_than_the_lease_runs_exactly_once(prefix: str) -> None:
    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix, lease_seconds=0.2)
        await transport.declare_queue(Queue("q"))
        due = time.time() + 0.8
        await transport.publish_batch(
            [out("soon", due_at=due), out("day", due_at=time.time() + 86400)]
        )
        got = await transport.get(["q"], 10, timeout=5)
        assert ids(got) == ["soon"]
        assert got[0].delivery_count == 1
        assert time.time() >= due - 0.01
        await transport.ack(got)
        assert await transport.get(["q"], 10, timeout=1.0) == []  # several leases' worth
        assert await transport.size("q") == 1  # the one due tomorrow waits
        await transport.close()

    run(go())


def test_dead_letters_read_as_on_the_other_brokers(prefix: str) -> None:
    """The reason is the shared wording; the payload, binary and with newlines, comes back whole."""

    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix, lease_seconds=0.05, max_deliveries=1)
        await transport.declare_queue(Queue("q"))
        await transport.publish(out("a"))
        await transport.get(["q"], 1, timeout=1)
        assert await transport.get(["q"], 1, timeout=0.3) == []  # expired, then dead-lettered
        payload = b"\n\x00\xff{raw}\n"
        transport.put_raw("q", payload)
        poison = await transport.get(["q"], 1, timeout=1)
        await transport.reject(poison, 'bad: \u00e9 "quoted"\nsecond line')
        rejected, expired = await transport.dead_letters("q")
        assert expired.reason == max_deliveries_reason(1, 1)
        assert (expired.delivery_count, expired.queue) == (1, "q")
        assert rejected.payload == payload
        assert rejected.reason == 'bad: \u00e9 "quoted"\nsecond line'
        assert abs(rejected.failed_at - time.time()) < 5
        await transport.close()

    run(go())


# -- cancellation ------------------------------------------------------------------------------
def test_the_age_clock_keeps_one_stamp_a_second_and_drops_the_ones_no_message_needs(
    prefix: str,
) -> None:
    """Each queue's clock (``q:Q:clock``) gets one stamp per second in which messages became
    ready; reading the age drops the stamps older than the oldest ready message's; a queue
    whose ready messages are older than its clock (made ready without one) answers None."""
    client = redis.Redis.from_url(URL)
    clock = f"{prefix}q:q:clock"

    async def main() -> None:
        transport = RedisTransport(URL, key_prefix=prefix)
        await transport.declare_queue(Queue("q"))
        await transport.publish_batch([out("a1"), out("a2")])
        second = int(time.time())
        deadline = time.monotonic() + 3
        while int(time.time()) == second:  # the next second (a bounded wait)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await transport.publish(out("b"))
        assert client.zcard(clock) == 2
        taken = await transport.get(["q"], 2, timeout=5)
        assert ids(taken) == ["a1", "a2"]
        age = await transport.oldest_message_age("q")
        assert age is not None and 0 <= age < 1.5
        assert client.zcard(clock) == 1  # a1's second is needed no more
        client.delete(clock)
        assert await transport.oldest_message_age("q") is None
        await transport.ack(taken)
        await transport.purge("q")
        assert await transport.oldest_message_age("q") == 0.0
        await transport.close()

    try:
        run(main())
    finally:
        client.close()


def test_a_cancelled_get_gives_its_claim_back(prefix: str) -> None:
    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix, lease_seconds=60)
        await transport.declare_queue(Queue("q"))
        await transport.publish_batch([out(f"m{i}") for i in range(5)])
        claiming = asyncio.ensure_future(transport.get(["q"], 5, timeout=5))
        await asyncio.sleep(0)  # let it send its claim: the cancel lands while it is in flight
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
        # with a 60 s lease, only the give-back can make them visible again within the test
        back: list[Delivery] = []
        deadline = time.monotonic() + 5
        while len(back) < 5 and time.monotonic() < deadline:
            back += await transport.get(["q"], 5, timeout=1)
        assert sorted(ids(back)) == [f"m{i}" for i in range(5)]
        await transport.ack(back)
        await transport.close()

    run(go())


def test_a_get_cancelled_while_blocked_leaves_the_transport_working(prefix: str) -> None:
    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix)
        await transport.declare_queue(Queue("q"))
        probe = redis.Redis.from_url(URL)
        waiting = asyncio.ensure_future(transport.get(["q"], 1, timeout=30))
        await until_blocked(probe, blocked_clients(probe) + 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        probe.close()
        await transport.publish(out("after"))
        got = await transport.get(["q"], 1, timeout=5)
        assert ids(got) == ["after"]
        await transport.ack(got)
        await transport.close()

    run(go())


def test_a_get_cancelled_while_blocked_gives_back_what_its_wake_claimed(prefix: str) -> None:
    """The claim sent behind the BLPOP runs even for a cancelled get (unblocked at once with
    CLIENT UNBLOCK); what it claimed comes back, not after its 60 s lease."""

    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix, lease_seconds=60)
        producer = RedisTransport(URL, key_prefix=prefix)
        await transport.declare_queue(Queue("q"))
        probe = redis.Redis.from_url(URL)
        baseline = blocked_clients(probe)
        waiting = asyncio.ensure_future(transport.get(["q"], 1, timeout=30))
        await until_blocked(probe, baseline + 1)
        waiting.cancel()
        await asyncio.to_thread(producer.publish_sync, [out("raced")])  # may be claimed by it
        with pytest.raises(asyncio.CancelledError):
            await waiting
        deadline = time.monotonic() + 5
        while blocked_clients(probe) > baseline:
            assert time.monotonic() < deadline, "the cancelled BLPOP was never unblocked"
            await asyncio.sleep(0.001)
        got = await transport.get(["q"], 1, timeout=5)
        assert ids(got) == ["raced"]
        await transport.ack(got)
        probe.close()
        await transport.close()
        await producer.close()

    run(go())


def test_a_wake_after_redis_forgot_its_scripts_still_claims(prefix: str) -> None:
    async def go() -> None:
        transport = RedisTransport(URL, key_prefix=prefix)
        await transport.declare_queue(Queue("q"))
        probe = redis.Redis.from_url(URL)
        waiting = asyncio.ensure_future(transport.get(["q"], 1, timeout=30))
        await until_blocked(probe, blocked_clients(probe) + 1)
        probe.script_flush()  # the claim queued behind the BLPOP meets NOSCRIPT
        await asyncio.to_thread(transport.put_raw, "q", b"payload")
        got = await waiting
        assert [d.payload for d in got] == [b"payload"]
        await transport.ack(got)
        probe.close()
        await transport.close()

    run(go())


class Handed:
    """An ack batcher's side of carried acks: hands ``acks`` over once, notes failures."""

    def __init__(self, acks: list[Delivery]) -> None:
        self.acks = acks
        self.failures: list[BaseException] = []

    def take(self) -> list[Delivery]:
        taken, self.acks = self.acks, []
        return taken

    def failed(self, exc: BaseException, deliveries: Any) -> None:
        self.failures.append(exc)


def carrying(consumer: RedisTransport, acks: list[Delivery]) -> tuple[Handed, list[str]]:
    """``acks`` handed to ``consumer`` as early acks to carry, and the list its own settle
    calls are noted in from now on."""
    handed = Handed(acks)
    consumer.carry_early_acks(handed)
    settles: list[str] = []
    settle = consumer._settle

    async def counting(op: str, *args: Any) -> None:
        settles.append(op)
        await settle(op, *args)

    consumer._settle = counting  # type: ignore[method-assign, assignment]
    return handed, settles


def held(probe: redis.Redis, prefix: str, queue: str = "q") -> int:
    """Messages of ``queue`` still stored (leased and not settled)."""
    return int(probe.hlen(f"{prefix}q:{queue}:data"))


async def idle_wait_carrying(
    prefix: str, flush_scripts: bool, url: str = URL
) -> tuple[int, int, int, Handed]:
    """One message got and handed over as an early ack, then a get that waits for the next:
    how many messages are held while it waits and after, and the settle calls of its own."""
    consumer = RedisTransport(url, key_prefix=prefix)
    await consumer.declare_queue(Queue("q"))
    probe = redis.Redis.from_url(url)
    await asyncio.to_thread(consumer.publish_sync, [out("first")])
    got = await consumer.get(["q"], 10, timeout=10)  # 1 of 10: the next get waits at once
    handed, settles = carrying(consumer, got)
    if flush_scripts:
        probe.script_flush()  # the carried settle meets NOSCRIPT
    else:  # as after any ack: a Redis that never ran the settle script has not got it yet
        probe.script_load(lua.SETTLE)
    waiting = asyncio.ensure_future(consumer.get(["q"], 10, timeout=10))
    await until_blocked(probe, blocked_clients(probe) + 1)
    while_waiting = held(probe, prefix)
    await asyncio.to_thread(consumer.publish_sync, [out("second")])
    second = await waiting
    after = held(probe, prefix) - len(second)
    await consumer.ack(second)
    probe.close()
    await consumer.close()
    return while_waiting, after, settles.count("ack") - 1, handed


def test_an_idle_wait_carries_the_early_acks_in_its_write(prefix: str) -> None:
    """The early ack of a worker's last task goes in the write of its wait for the next one:
    settled while the get still waits, with no settle call of its own."""

    async def go() -> None:
        while_waiting, after, own_settles, handed = await idle_wait_carrying(prefix, False)
        assert (while_waiting, after, own_settles, handed.failures) == (0, 0, 0, [])

    run(go())


def test_a_carried_ack_refused_for_a_forgotten_script_is_sent_again(
    prefix: str, tmp_path: Path
) -> None:
    """Redis restarted and forgot its scripts: the carried settle meets NOSCRIPT, and the
    acks are sent again the usual way (which loads it) once the wait has ended. On a Redis of
    the test's own: scripts are the whole server's, and another test acking on the shared one
    loads the settle script again between the flush and the wait."""
    server = RedisServer(tmp_path)
    server.start()

    async def go() -> None:
        _, after, own_settles, handed = await idle_wait_carrying(prefix, True, server.url)
        assert (after, own_settles, handed.failures) == (0, 1, [])

    try:
        run(go())
    finally:
        server.stop()


def test_a_busy_claim_carries_the_early_acks_in_its_write(prefix: str) -> None:
    """A worker with work waiting claims without a wait: the early acks waiting go in the
    claim's write, settled with no settle call of their own."""

    async def go() -> None:
        consumer = RedisTransport(URL, key_prefix=prefix)
        await consumer.declare_queue(Queue("q"))
        probe = redis.Redis.from_url(URL)
        await asyncio.to_thread(consumer.publish_sync, [out(f"m{i}") for i in range(4)])
        first = await consumer.get(["q"], 2, timeout=1)  # as many as asked: no wait next
        handed, settles = carrying(consumer, first)
        second = await consumer.get(["q"], 1, timeout=1)
        assert ids(second) == ["m2"]
        assert (held(probe, prefix), settles, handed.failures, handed.acks) == (2, [], [], [])
        await consumer.ack(second)
        assert held(probe, prefix) == 1
        probe.close()
        await consumer.close()

    run(go())


# -- topology shared between instances ---------------------------------------------------------
def test_a_binding_added_elsewhere_is_seen_by_the_next_publish(prefix: str) -> None:
    async def go() -> None:
        producer = RedisTransport(URL, key_prefix=prefix)
        admin = RedisTransport(URL, key_prefix=prefix)
        await admin.declare_queue(Queue("a", exchange=Exchange("ex"), routing_key="k"))
        assert await producer.publish(out("1", "k", "ex")) == 1  # producer caches the topology
        await admin.declare_queue(Queue("b"))
        await admin.bind(Binding("ex", "b", "k"))
        assert await producer.publish(out("2", "k", "ex")) == 2  # refused as stale, re-routed
        await admin.declare_exchange(Exchange("late", "fanout"))
        await admin.bind(Binding("late", "a"))
        assert await producer.publish(out("3", "x", "late")) == 1  # unknown to the cache
        await admin.declare_queue(Queue("c"))
        assert await producer.publish(out("4", "c")) == 1  # the cache had it unroutable
        assert ids(await producer.get(["a"], 10, timeout=0)) == ["1", "2", "3"]
        assert ids(await producer.get(["b"], 10, timeout=0)) == ["2"]
        await admin.delete_queue("b")
        assert await producer.publish(out("5", "k", "ex")) == 1
        for transport in (producer, admin):
            await transport.close()

    run(go())


def test_publish_batch_of_ten_thousand_takes_a_few_calls(tmp_path: Path) -> None:
    """Counted on a Redis of the test's own: the shared server's command statistics also count
    whatever else runs on the machine."""
    require_service("Redis", 6379)  # the redis-server binary comes with it
    server = RedisServer(tmp_path)
    server.start()

    async def go() -> None:
        transport = RedisTransport(server.url)
        await transport.declare_queue(Queue("q"))
        await transport.publish(out("warm-up"))
        probe = redis.Redis.from_url(server.url)
        calls_before = probe.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        items = [out(f"m{i}") for i in range(10_000)]
        started = time.perf_counter()
        assert await transport.publish_batch(items) == [1] * 10_000
        took = time.perf_counter() - started
        calls = probe.info("commandstats")["cmdstat_evalsha"]["calls"] - calls_before
        probe.close()
        print(f"\npublish_batch of 10,000: {took * 1000:.1f} ms in {calls} script calls")
        assert calls <= 12
        assert await transport.size("q") == 10_001
        assert await transport.purge("q") == 10_001
        await transport.close()

    try:
        run(go())
    finally:
        server.stop()


def test_publish_sync_from_eight_threads(prefix: str) -> None:
    transport = RedisTransport(URL, key_prefix=prefix)
    run(transport.declare_queue(Queue("q")))
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def produce(thread: int) -> None:
        try:
            start.wait(5)
            for i in range(250):
                assert transport.publish_sync([out(f"t{thread}-{i}")]) == [1]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []

    async def drain() -> None:
        seen: list[str] = []
        while got := await transport.get(["q"], 500, timeout=0):
            seen += ids(got)
            await transport.ack(got)
        assert sorted(seen) == sorted(f"t{n}-{i}" for n in range(8) for i in range(250))
        await transport.close()

    run(drain())


# -- URLs and secrets --------------------------------------------------------------------------
def test_plain_and_unix_urls() -> None:
    assert parse_redis_url("redis://u:p%40ss@h.example:7000/3?socket_timeout=2.5") == {
        "username": "u",
        "password": "p@ss",
        "host": "h.example",
        "port": 7000,
        "db": 3,
        "socket_timeout": 2.5,
    }
    assert parse_redis_url("redis://") == {"host": "127.0.0.1", "port": 6379, "db": 0}
    assert parse_redis_url("unix:///run/redis.sock?db=2&password=x") == {
        "unix_socket_path": "/run/redis.sock",
        "db": 2,
        "password": "x",
    }
    assert parse_redis_url("redis://h/1", {"db": 4, "socket_keepalive": "yes"})["db"] == 4
    for bad in ("redis://h/x", "http://h", "redis://h:99999", "unix://"):
        with pytest.raises(ImproperlyConfigured):
            parse_redis_url(bad)
    with pytest.raises(ImproperlyConfigured, match="rediss"):
        parse_redis_url("redis://h", {"ssl_ca_certs": "/ca.pem"})


def test_tls_urls_take_options_from_the_query_and_the_transport_options() -> None:
    kwargs = parse_redis_url(
        "rediss://:pw@cache.example:6380/2?ssl_cert_reqs=CERT_OPTIONAL&ssl_ca_certs=/q/ca.pem",
        {"ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem", "ssl_ca_certs": "/o/ca.pem"},
    )
    assert kwargs == {
        "password": "pw",
        "host": "cache.example",
        "port": 6380,
        "db": 2,
        "ssl": True,
        "ssl_cert_reqs": "optional",
        "ssl_ca_certs": "/o/ca.pem",  # the transport options win over the URL
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
    }
    assert parse_redis_url("rediss://h")["ssl_cert_reqs"] == "required"
    with pytest.raises(ImproperlyConfigured, match="ssl_cert_reqs"):
        parse_redis_url("rediss://h", {"ssl_cert_reqs": "sometimes"})


def test_sentinel_urls() -> None:
    url = "redis+sentinel://:pw@s1:26379;sentinel://s2;redis+sentinel://s3:26380/4"
    assert is_sentinel_url(url)
    spec = parse_sentinel_url(url, {"master_name": "mymaster", "socket_timeout": 1})
    assert spec.sentinels == [("s1", 26379), ("s2", 26379), ("s3", 26380)]
    assert spec.master_name == "mymaster"
    assert spec.connection_kwargs == {"password": "pw", "db": 4, "socket_timeout": 1.0}
    assert spec.sentinel_kwargs == {"socket_timeout": 1.0}
    assert "pw" not in repr(spec)
    assert parse_sentinel_url("sentinel://s?master_name=m").master_name == "m"
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        parse_sentinel_url("redis+sentinel://s1")
    transport = RedisTransport(url, master_name="mymaster")  # builds no connection yet
    assert "pw" not in repr(transport)
    assert password_of(url, {"master_name": "m"}) == "pw"


def test_the_password_never_shows_in_a_repr_or_an_error() -> None:
    secret = "s3cr3t-Pa55"
    transport = RedisTransport(f"redis://user:{secret}@127.0.0.1:1/0")
    assert secret not in repr(transport)
    assert "***" in repr(transport)
    with pytest.raises(TransportError) as refused:
        run(transport.connect())
    assert secret not in str(refused.value)
    assert "127.0.0.1:1" in str(refused.value)

    require_service("Redis", 6379)
    wrong = RedisTransport(f"redis://nobody:{secret}@127.0.0.1:6379/15")  # no such user
    with pytest.raises(TransportError) as denied:
        run(wrong.connect())
    assert secret not in str(denied.value)
    assert secret not in repr(denied.value)
    with pytest.raises(TransportError) as denied_sync:
        wrong.publish_sync([out("x")])
    assert secret not in str(denied_sync.value)


# -- a Redis restart ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int, directory: Path, durable: bool = True) -> subprocess.Popen[bytes]:
    """A private redis-server, durable (append-only file, fsync always) or with no persistence."""
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    server = subprocess.Popen([*command, "--save", "", *persistence], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:  # wait until it answers (and has loaded its append-only file)
        try:
            if client.ping():
                break
        except (redis.ConnectionError, redis.BusyLoadingError):
            assert server.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.01)
    client.close()
    return server


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def need_redis_server() -> None:
    require_tool("redis-server", "a Redis of the test's own, to restart")


def test_a_redis_restart_is_survived_by_the_same_instance(tmp_path: Path) -> None:
    need_redis_server()
    port = free_port()
    servers = [start_redis(port, tmp_path)]
    try:

        async def go() -> None:
            transport = RedisTransport(f"redis://127.0.0.1:{port}/0", lease_seconds=60)
            await transport.declare_queue(Queue("q"))
            await transport.declare_queue(Queue("idle"))
            for start in range(0, 500, 100):
                batch = [out(f"m{i}") for i in range(start, start + 100)]
                assert await transport.publish_batch(batch) == [1] * 100

            probe = redis.Redis(port=port)
            waiting = asyncio.ensure_future(transport.get(["idle"], 1, timeout=30))
            await until_blocked(probe)
            probe.close()
            stop(servers[0])
            with pytest.raises(TransportError, match=r"Connection|connect|closed"):
                await waiting  # the blocked get learns of the outage at once
            with pytest.raises(TransportError):
                await transport.publish(out("lost"))
            with pytest.raises(TransportError):
                await transport.get(["q"], 10, timeout=0)
            with pytest.raises(TransportError):
                transport.publish_sync([out("lost")])

            servers.append(start_redis(port, tmp_path))
            seen: list[str] = []
            while got := await transport.get(["q"], 100, timeout=0):
                seen += ids(got)
                await transport.ack(got)
            assert sorted(seen) == sorted(f"m{i}" for i in range(500))
            assert await transport.size("q") == 0
            assert transport.publish_sync([out("after")]) == [1]
            await transport.close()

        run(go())
    finally:
        for server in servers:
            stop(server)
        with contextlib.suppress(OSError):
            os.remove(tmp_path / "dump.rdb")


def test_declarations_are_made_again_after_redis_loses_its_data(tmp_path: Path) -> None:
    """A Redis without persistence restarts empty; each instance declares again what it had."""
    need_redis_server()
    port = free_port()
    servers = [start_redis(port, tmp_path, durable=False)]
    url = f"redis://127.0.0.1:{port}/0"
    try:

        async def go() -> None:
            producer, worker = RedisTransport(url), RedisTransport(url)
            await producer.declare_queue(Queue("q", exchange=Exchange("ex"), routing_key="k"))
            await worker.declare_queue(Queue("w", exchange=Exchange("bus", "fanout")))
            assert await producer.publish(out("before", "k", "ex")) == 1
            stop(servers[0])
            servers.append(start_redis(port, tmp_path, durable=False))
            # the pool reconnects by itself; the claim notices the topology is gone
            assert await worker.get(["w"], 1, timeout=0) == []
            assert await producer.publish(out("after", "k", "ex")) == 1  # declares again too
            newcomer = RedisTransport(url)
            assert await newcomer.publish(out("bus", "", "bus")) == 1
            assert ids(await newcomer.get(["q"], 10, timeout=0)) == ["after"]
            assert ids(await newcomer.get(["w"], 10, timeout=0)) == ["bus"]
            for transport in (producer, worker, newcomer):
                await transport.close()

        run(go())
    finally:
        for server in servers:
            stop(server)
