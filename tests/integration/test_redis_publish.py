"""The Redis sync publish of a big batch: chunks pipelined on one connection, each answered.

A batch of more than ``CHUNK_COPIES`` messages is several script calls sent back to back; these
tests make some of them fail (a flushed script cache, a stale topology, a killed connection, a
bad name) and check that every message is stored exactly once, in order, or none is: with
each send waiting for its replies (``confirm_window: 0``) and with the replies read behind
(the default window; the sends are flushed before the queue is read).
Uses database 15 of the shared server under a key prefix private to each test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac.errors import TransportError
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.base import Outgoing
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis.scripts import CHUNK_COPIES
from conftest import delete_redis_keys, json_task_message, require_service

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/15"
BATCH = CHUNK_COPIES * 3 + 7  # four script calls


def out(label: str, routing_key: str = "q", exchange: str = "") -> Outgoing:
    message = json_task_message(label, "tests.publish", unique=False)
    return Outgoing(message, exchange, routing_key, wire=message.to_wire())


@pytest.fixture(params=[0, 256], ids=["waited", "written-behind"])
def window(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("Redis", 6379)
    name = f"celeriac-it:{uuid.uuid4().hex[:12]}:"
    yield name
    delete_redis_keys(URL, name)


def declared(prefix: str, *queues: Queue, window: int = 0) -> RedisTransport:
    transport = RedisTransport(URL, key_prefix=prefix, confirm_window=window)

    async def declare() -> None:
        for queue in queues:
            await transport.declare_queue(queue)

    asyncio.run(declare())
    return transport


def publish(transport: RedisTransport, items: list[Outgoing]) -> list[int]:
    """Publish and wait for every reply; the routed counts, as known (1 each, written behind)."""
    counts = transport.publish_sync(items)
    transport.flush_sync()
    if transport.sync_publish_window:
        assert counts == [1] * len(items)
    return counts


def routed(transport: RedisTransport, count: int, n: int = BATCH) -> list[int]:
    """What :func:`publish` returns for ``n`` messages routed to ``count`` queues each."""
    return [1 if transport.sync_publish_window else count] * n


def drained(transport: RedisTransport, queue: str) -> list[str]:
    async def drain() -> list[str]:
        got = await transport.get([queue], BATCH + 10, timeout=0)
        await transport.ack(got)
        await transport.close()
        return [d.decode().id for d in got]

    return asyncio.run(drain())


def test_a_batch_after_redis_forgot_its_scripts_is_stored_once_in_order(
    prefix: str, window: int
) -> None:
    transport = declared(prefix, Queue("q"), window=window)
    publish(transport, [out("warm-up")])  # the thread's connection knows the script
    redis.Redis.from_url(URL).script_flush()
    labels = [f"m{i}" for i in range(BATCH)]
    assert publish(transport, [out(label) for label in labels]) == [1] * BATCH
    assert drained(transport, "q") == ["warm-up", *labels]


def test_a_batch_routed_on_a_stale_topology_is_routed_again(prefix: str, window: int) -> None:
    transport = declared(
        prefix, Queue("a", exchange=Exchange("ex"), routing_key="k"), window=window
    )
    publish(transport, [out("warm-up", "k", "ex")])  # caches the topology
    declared(prefix, Queue("b"))
    admin = RedisTransport(URL, key_prefix=prefix)
    asyncio.run(admin.bind(Binding("ex", "b", "k")))
    labels = [f"m{i}" for i in range(BATCH)]
    assert publish(transport, [out(label, "k", "ex") for label in labels]) == routed(transport, 2)
    assert drained(transport, "b") == labels
    assert drained(admin, "a") == ["warm-up", *labels]


def test_a_killed_connection_is_replaced_and_nothing_is_stored_twice(
    prefix: str, window: int
) -> None:
    transport = declared(prefix, Queue("q"), window=window)
    publish(transport, [out("warm-up")])
    probe = redis.Redis.from_url(URL)
    assert probe.client_kill_filter(_id=str(_client_id(transport))) == 1
    labels = [f"m{i}" for i in range(BATCH)]
    assert publish(transport, [out(label) for label in labels]) == [1] * BATCH
    assert drained(transport, "q") == ["warm-up", *labels]
    probe.close()


def test_a_lost_reply_does_not_store_a_batch_twice(
    prefix: str, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link drops after Redis ran every chunk but before a reply was read: the chunks sent
    again on a new connection are recognised by their tokens and not stored again."""
    transport = declared(prefix, Queue("q"), window=window)
    publish(transport, [out("warm-up")])
    conn = transport._thread_conns.conn
    real = conn.read_response
    probe = redis.Redis.from_url(URL)
    key = f"{prefix}q:q:data"

    def lost(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(conn, "read_response", real)
        deadline = time.monotonic() + 10
        while probe.hlen(key) < BATCH + 1 and time.monotonic() < deadline:  # all chunks ran
            time.sleep(0.005)
        raise redis.ConnectionError("the reply was lost")

    monkeypatch.setattr(conn, "read_response", lost)
    labels = [f"m{i}" for i in range(BATCH)]
    assert publish(transport, [out(label) for label in labels]) == [1] * BATCH
    assert drained(transport, "q") == ["warm-up", *labels]
    probe.close()


def test_a_batch_sent_again_by_a_producer_retry_is_stored_once(prefix: str, window: int) -> None:
    transport = declared(prefix, Queue("q"), window=window)
    items = [out(f"m{i}") for i in range(BATCH)]
    assert publish(transport, items) == [1] * BATCH
    assert publish(transport, items) == [1] * BATCH  # the same messages: already there
    assert drained(transport, "q") == [f"m{i}" for i in range(BATCH)]


def test_a_bad_name_refuses_the_whole_batch_and_the_connection_stays_usable(
    prefix: str, window: int
) -> None:
    transport = declared(prefix, Queue("q"), Queue("bad\0name"), window=window)
    items = [out(f"m{i}") for i in range(BATCH)] + [out("last", "bad\0name")]
    with pytest.raises(TransportError, match="NUL"):
        transport.publish_sync(items)
    assert publish(transport, [out("after")]) == [1]
    assert drained(transport, "q") == ["after"]


def test_a_single_send_is_stored_as_a_batch_of_one(prefix: str) -> None:
    """A ``.delay()`` on a loaded topology builds its PUBLISH call on a path of its own
    (``_publish_one_sync``): what it stores is byte for byte what the batch path stores, a
    priority and a due time included, to every queue its exchange routes to."""
    fast = declared(
        prefix,
        Queue("a", exchange=Exchange("ex"), routing_key="k", max_priority=9),
        Queue("b", exchange=Exchange("ex"), routing_key="k"),
        window=256,
    )
    general = declared(prefix, window=0)  # waited for: the batch path, even for one
    publish(fast, [out("warm-up", "k", "ex")])  # the topology is loaded now
    client = redis.Redis.from_url(URL)
    values: list[dict[str, list[Any]]] = []
    for transport, label in ((fast, "fast"), (general, "general")):
        message = json_task_message(label, "tests.publish", unique=False, priority=7)
        item = Outgoing(message, "ex", "k", due_at=time.time() + 600, wire=message.to_wire())
        before = {q: set(client.hkeys(f"{prefix}q:{q}:data")) for q in ("a", "b")}
        publish(transport, [item])
        values.append(
            {
                q: [
                    client.hget(f"{prefix}q:{q}:data", key) or b""
                    for key in set(client.hkeys(f"{prefix}q:{q}:data")) - before[q]
                ]
                for q in ("a", "b")
            }
        )
        assert client.zcard(f"{prefix}q:a:delayed") == client.zcard(f"{prefix}q:b:delayed")
    fast_values, general_values = values
    for queue in ("a", "b"):
        [mine], [theirs] = fast_values[queue], general_values[queue]
        assert mine.replace(b"fast", b"general") == theirs
    assert client.zcard(f"{prefix}q:a:delayed") == 2  # both due in ten minutes
    client.close()


def test_a_single_send_routed_on_a_stale_topology_is_routed_again(prefix: str) -> None:
    transport = declared(prefix, Queue("a", exchange=Exchange("ex"), routing_key="k"), window=256)
    publish(transport, [out("warm-up", "k", "ex")])  # caches the topology
    declared(prefix, Queue("b"))
    admin = RedisTransport(URL, key_prefix=prefix)
    asyncio.run(admin.bind(Binding("ex", "b", "k")))
    assert publish(transport, [out("one", "k", "ex")]) == [1]
    assert drained(transport, "b") == ["one"]
    assert drained(admin, "a") == ["warm-up", "one"]


def test_a_single_send_with_a_bad_name_is_refused_before_anything_is_sent(prefix: str) -> None:
    transport = declared(prefix, Queue("q"), window=256)
    publish(transport, [out("warm-up")])
    with pytest.raises(TransportError, match="NUL"):
        transport.publish_sync([out("bad", "bad\0name")])
    assert publish(transport, [out("after")]) == [1]
    assert drained(transport, "q") == ["warm-up", "after"]


def _client_id(transport: RedisTransport) -> int:
    """The server-side id of the calling thread's publish connection."""
    conn = transport._thread_conns.conn
    conn.send_command("CLIENT", "ID")
    return int(conn.read_response())
