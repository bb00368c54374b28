"""Broker-side deduplication of one send (:attr:`celeriac.transports.base.Outgoing.dedup_key`).

What every transport whose ``deduplicates`` is True promises: a keyed item is stored only if its
key was not recorded in the last ``dedup_ttl`` seconds, checked and recorded in the same atomic
step as the store; a dropped item counts 0 (it reached no queue through this call); an
unroutable keyed item records nothing; items without a key are untouched, in the same batch
too. Beat sends each slot under one key, so that two beats that both think they lead cannot
double a run. Runs over the brokers that deduplicate, with the fixtures of the transport suite.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
import test_transport_contract as suite
from racers import race
from test_transport_contract import TRANSPORTS, Case, MakeTransport, drain, labels, out, run_async

from celeriac.protocol.message import Message
from celeriac.routing import Exchange, Queue
from celeriac.transports.base import Outgoing, Transport

DEDUPLICATING = ("memory", "sqlite", "redis")

# the transport suite's fixtures, over this module's ``case``
make_transport = suite.make_transport
transport = suite.transport


@pytest.fixture(params=[pytest.param(n, marks=TRANSPORTS[n].marks) for n in DEDUPLICATING])
def case(request: pytest.FixtureRequest) -> Case:
    return TRANSPORTS[str(request.param)]


def keyed(
    label: str, key: str, ttl: float = 60.0, routing_key: str = "q", ex: str = ""
) -> Outgoing:
    plain = out(label, routing_key, ex)
    return Outgoing(plain.message, ex, routing_key, dedup_key=key, dedup_ttl=ttl)


@run_async
async def test_a_second_send_of_a_key_within_its_ttl_is_dropped(transport: Transport) -> None:
    assert transport.deduplicates
    await transport.declare_queue(Queue("q"))
    assert await transport.publish(keyed("first", "e@1")) == 1
    assert await transport.publish(keyed("again", "e@1")) == 0
    assert transport.publish_sync([keyed("sync", "e@1")]) == [0]  # the other path agrees
    assert await transport.publish(keyed("other", "e@2")) == 1
    assert sorted(labels(await drain(transport))) == ["first", "other"]


@run_async
async def test_after_its_ttl_a_key_goes_through_again(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    ttl = 0.3
    start = time.monotonic()
    assert await transport.publish(keyed("first", "k", ttl)) == 1
    assert await transport.publish(keyed("early", "k", ttl)) == 0
    await asyncio.sleep(start + ttl + 0.05 - time.monotonic())  # the ttl is what is tested
    assert await transport.publish(keyed("late", "k", ttl)) == 1
    assert await transport.publish(keyed("later", "k", ttl)) == 0  # recorded anew
    assert labels(await drain(transport)) == ["first", "late"]


@run_async
async def test_keyed_and_plain_items_in_one_batch(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    batch = [out("p1"), keyed("a1", "a"), out("p2"), keyed("a2", "a"), keyed("b1", "b")]
    assert await transport.publish_batch(batch) == [1, 1, 1, 0, 1]  # first of a key wins
    again = [keyed("a3", "a"), out("p3"), keyed("c1", "c"), keyed("b2", "b")]
    assert transport.publish_sync(again) == [0, 1, 1, 0]
    assert labels(await drain(transport)) == ["p1", "a1", "p2", "b1", "p3", "c1"]


@run_async
async def test_a_large_batch_drops_exactly_the_repeated_keys(transport: Transport) -> None:
    """Enough items for several of Redis's script calls: drops map back to the right items."""
    await transport.declare_queue(Queue("q"))
    items: list[Outgoing] = []
    expected: list[int] = []
    seen: set[str] = set()
    for i in range(2600):
        if i % 97 == 0:
            key = f"k{i % 5}"
            items.append(keyed(f"i{i}", key))
            expected.append(0 if key in seen else 1)
            seen.add(key)
        else:
            items.append(out(f"i{i}"))
            expected.append(1)
    assert transport.publish_sync(items) == expected
    assert await transport.size("q") == sum(expected)


@run_async
async def test_a_keyed_send_reaches_all_its_queues_or_none(transport: Transport) -> None:
    bus = Exchange("bus", "fanout")
    for name in ("w1", "w2"):
        await transport.declare_queue(Queue(name, exchange=bus))
    assert await transport.publish(keyed("x", "slot", ex="bus", routing_key="")) == 2
    assert await transport.publish(keyed("y", "slot", ex="bus", routing_key="")) == 0
    for name in ("w1", "w2"):
        assert labels(await drain(transport, name)) == ["x"]


@run_async
async def test_an_unroutable_keyed_send_records_nothing(transport: Transport) -> None:
    assert await transport.publish(keyed("lost", "k", routing_key="nowhere")) == 0
    await transport.declare_queue(Queue("nowhere"))
    assert await transport.publish(keyed("found", "k", routing_key="nowhere")) == 1
    assert labels(await drain(transport, "nowhere")) == ["found"]


@run_async
async def test_a_key_with_no_ttl_publishes_and_records_nothing(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    assert await transport.publish(keyed("a", "k", ttl=0)) == 1
    assert await transport.publish(keyed("b", "k", ttl=0)) == 1
    assert await transport.publish(keyed("c", "k")) == 1


KEYS = [f"entry{i % 10}@{i // 10}" for i in range(200)]


def test_threads_racing_the_same_keys_store_each_once(make_transport: MakeTransport) -> None:
    """Four producers (own transports, own threads) send the same 200 keys in their own orders,
    one publish each, all at once: every key is stored exactly once."""
    setup = make_transport()
    asyncio.run(setup.declare_queue(Queue("q")))
    gun = threading.Barrier(4)
    won: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        producer = make_transport()
        keys = random.Random(n).sample(KEYS, len(KEYS))
        try:
            gun.wait(10)
            for key in keys:
                if producer.publish_sync([keyed(key, key)]) == [1]:
                    won[n].append(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(key for keys in won for key in keys) == sorted(KEYS)
    stored = asyncio.run(drain(setup, count=1000))
    assert sorted(d.decode().id.split("-")[0] for d in stored) == sorted(KEYS)


RACER_SETUP = """
from celeriac.protocol.message import task_message
from celeriac.transports.base import Outgoing
from celeriac.transports.registry import create_transport
producer = create_transport(ARG["url"], **ARG["options"])
def item(key):
    message = task_message(task="t", task_id=key + "/x", body=b"[[], {}, {}]",
                           content_type="application/json", content_encoding="utf-8")
    return Outgoing(message, "", "q", dedup_key=key)
producer.publish_sync([item("warm-up")])  # connected and routed before the gun
"""
RACER_BODY = """
import time
start = time.time()
won = [key for key in ARG["keys"] if producer.publish_sync([item(key)]) == [1]]
RESULT = {"won": won, "start": start, "end": time.time()}
"""


@pytest.mark.parametrize("case", ["sqlite", "redis"], indirect=True)
def test_processes_racing_the_same_keys_store_each_once(make_transport: MakeTransport) -> None:
    """Three processes send the same 200 keys in their own orders, one publish each, all at
    once (their sending overlaps in time; SQLite's lock need not share the wins out evenly):
    every key is stored exactly once."""
    setup = make_transport()
    asyncio.run(setup.declare_queue(Queue("q")))
    args = [
        {"url": setup.url, "options": setup.options, "keys": random.Random(n).sample(KEYS, 200)}
        for n in range(3)
    ]
    results = race(RACER_SETUP, RACER_BODY, args)
    assert max(r["start"] for r in results) < min(r["end"] for r in results), "no overlap"
    assert sorted(key for r in results for key in r["won"]) == sorted(KEYS)
    stored = asyncio.run(drain(setup, count=1000))
    ids = sorted(Message.from_wire(d.payload).id.removesuffix("/x") for d in stored)
    assert ids == sorted([*KEYS, "warm-up"])
