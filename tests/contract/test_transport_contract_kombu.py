"""The transport contract suite, run again on the Redis broker in kombu's layout
(``layout="kombu"``): what ``celeriac.transports.base`` promises holds there too, except what
kombu's layout rules out, each replaced here by a test of what holds instead:

* priorities are kombu's: four steps (0-2, 3-5, 6-8, 9), the lower served first, and no
  ``x-max-priority``;
* the default exchange pushes to the list its routing key names, declared or not (kombu keeps
  no list of queues), so it counts one for an undeclared queue too, and a deleted queue can be
  sent to again (its list is made anew);
* a fanout exchange is Redis PUBLISH: only the consumers of its queues subscribed at that
  moment get a message, nothing is kept for a queue nobody consumes;
* there are no headers exchanges;
* the visibility timeout (the lease) is read by whoever restores: every consumer of a queue
  must use the same one, so the stale-ack case runs with one timeout for both consumers.

The other tests are :mod:`test_transport_contract`'s own, imported so that pytest collects them
in this module, where ``case`` is the kombu layout.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from test_transport_contract import (
    REDIS_URL,
    Case,
    MakeTransport,
    _cleanup_redis,
    _redis_prefix,
    drain,
    inject_raw,
    labels,
    make_transport,
    out,
    run_async,
    test_bind_and_unbind,
    test_declarations_are_idempotent,
    test_direct_exchange,
    test_due_at_hides_until_due,
    test_exchange_type_conflict_is_refused,
    test_extend_keeps_the_lease,
    test_get_returns_at_most_max_count,
    test_get_serves_every_queue,
    test_get_times_out_empty,
    test_lease_expiry_redelivers,
    test_max_deliveries_dead_letters,
    test_message_becomes_due,
    test_publish_sync_from_another_thread_wakes_get,
    test_reject_dead_letters_with_reason,
    test_requeue,
    test_requeue_with_delay,
    test_size_and_purge_spare_leased,
    test_topic_exchange_reaches_two_queues_or_none,
    test_undecodable_payload_is_delivered_and_dead_lettered_intact,
    test_unknown_exchange_refuses_the_whole_batch,
    transport,
)

from celeriac.errors import TransportError
from celeriac.protocol.message import Message
from celeriac.routing import Broadcast, Exchange, Queue
from celeriac.transports.base import Transport
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis.kombu_transport import KombuRedisTransport
from conftest import require_service

__all__ = [
    "inject_raw",
    "make_transport",
    "test_bind_and_unbind",
    "test_declarations_are_idempotent",
    "test_direct_exchange",
    "test_due_at_hides_until_due",
    "test_exchange_type_conflict_is_refused",
    "test_extend_keeps_the_lease",
    "test_get_returns_at_most_max_count",
    "test_get_serves_every_queue",
    "test_get_times_out_empty",
    "test_lease_expiry_redelivers",
    "test_max_deliveries_dead_letters",
    "test_message_becomes_due",
    "test_publish_sync_from_another_thread_wakes_get",
    "test_reject_dead_letters_with_reason",
    "test_requeue",
    "test_requeue_with_delay",
    "test_size_and_purge_spare_leased",
    "test_topic_exchange_reaches_two_queues_or_none",
    "test_undecodable_payload_is_delivered_and_dead_lettered_intact",
    "test_unknown_exchange_refuses_the_whole_batch",
    "transport",
]


def _make_kombu(tmp_path: Path, name: str, options: dict[str, Any]) -> Transport:
    require_service("Redis", 6379)
    made = RedisTransport(
        REDIS_URL, layout="kombu", global_keyprefix=_redis_prefix(name), **options
    )
    assert isinstance(made, KombuRedisTransport)
    return made


def _inject_kombu(transport: Transport, queue: str, payload: bytes) -> None:
    assert isinstance(transport, KombuRedisTransport)
    transport.put_raw(queue, payload)


@pytest.fixture(params=[pytest.param("redis-kombu", marks=(pytest.mark.redis,))])
def case(request: pytest.FixtureRequest) -> Case:
    return Case(_make_kombu, _inject_kombu, (pytest.mark.redis,), _cleanup_redis)


def _kombu_order(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.skip(reason=f"kombu's layout: {reason}")


@_kombu_order("priorities are kombu's steps, the lower first (see the replacement below)")
def test_priorities_higher_first_fifo_within() -> None: ...


@_kombu_order("priorities are kombu's steps, the lower first (see the replacement below)")
def test_priorities_one_at_a_time() -> None: ...


@_kombu_order("x-max-priority is not read: kombu's four steps serve every queue")
def test_max_priority_clamps() -> None: ...


@_kombu_order("a fanout exchange is PUBLISH: nothing is kept for a queue not consumed now")
def test_fanout_exchange() -> None: ...


@_kombu_order("kombu has no headers exchanges (declaring one is refused: see below)")
def test_headers_exchange_routes_on_message_headers() -> None: ...


@_kombu_order("the default exchange pushes to any routing key's list (kombu keeps no queues)")
def test_default_exchange_routes_by_queue_name() -> None: ...


@_kombu_order("fanout counts subscribers, the default exchange any key (see the replacement)")
def test_publish_batch_counts_per_item() -> None: ...


@_kombu_order("the default exchange reaches a deleted queue's name again (kombu's rule)")
def test_delete_queue() -> None: ...


@_kombu_order("the default exchange reaches a deleted queue's name again (kombu's rule)")
def test_auto_delete_queue_goes_with_its_consumer() -> None: ...


@_kombu_order("one visibility timeout per fleet: the replacement below uses one for both")
def test_stale_ack_does_not_touch_the_new_lease() -> None: ...


@_kombu_order("the envelope gains kombu's delivery properties (see the replacement below)")
def test_publish_get_ack() -> None: ...


# -- what holds instead -----------------------------------------------------------------------
@run_async
async def test_publish_get_ack_with_kombus_delivery_properties(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    item = out("a")
    assert await transport.publish(item) == 1
    [delivery] = await transport.get(["q"], 10, timeout=1)
    assert (delivery.queue, delivery.delivery_count, delivery.redelivered) == ("q", 1, False)
    got = Message.from_wire(delivery.payload)
    sent = item.message
    assert (got.headers, got.body, got.content_type) == (sent.headers, sent.body, sent.content_type)
    # what kombu's publisher adds: where it was sent, and a tag of its own
    extra = {k: v for k, v in got.properties.items() if k not in sent.properties}
    assert extra.pop("delivery_info") == {"exchange": "", "routing_key": "q"}
    assert len(extra.pop("delivery_tag")) == 36
    assert extra == {}
    await transport.ack([delivery])
    assert await transport.size("q") == 0
    assert await drain(transport) == []


@run_async
async def test_kombu_priorities_lower_step_first_fifo_within(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    spec = [("a", 9), ("b", 0), ("c", 4), ("d", 1), ("e", 3), ("f", None), ("g", 7)]
    await transport.publish_batch([out(label, priority=p) for label, p in spec])
    # steps 0 (0-2), 3 (3-5), 6 (6-8), 9; FIFO within each
    assert labels(await drain(transport)) == ["b", "d", "f", "c", "e", "g", "a"]


@run_async
async def test_default_exchange_pushes_to_any_key(transport: Transport) -> None:
    assert await transport.publish_batch([out("a", "q"), out("b", "nowhere")]) == [1, 1]
    assert labels(await drain(transport, "nowhere")) == ["b"]
    await transport.declare_queue(Queue("r", exchange=Exchange("d"), routing_key="k"))
    await transport.delete_queue("r")
    assert await transport.publish(out("c", "k", "d")) == 0  # the binding went with the queue


@run_async
async def test_headers_exchanges_are_refused(transport: Transport) -> None:
    with pytest.raises(TransportError, match="headers"):
        await transport.declare_exchange(Exchange("by-kind", "headers"))


@run_async
async def test_stale_ack_after_a_restore_is_skipped(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    slow = make_transport(visibility_timeout=0.3)
    other = make_transport(visibility_timeout=0.3)
    await slow.declare_queue(Queue("q"))
    await slow.publish(out("a"))
    stale = await slow.get(["q"], 1, timeout=1)
    fresh = await other.get(["q"], 1, timeout=10)  # restored once slow's record ran out
    assert fresh[0].delivery_count == 2 and fresh[0].tag != stale[0].tag
    with caplog.at_level(logging.WARNING, logger="celeriac.transports"):
        await slow.ack(stale)
        await slow.extend(stale)
        await slow.reject(stale, "stale")
    assert any("no longer held" in r.getMessage() for r in caplog.records)
    assert await slow.dead_letters("q") == []
    await other.requeue(fresh)  # still other's: it goes back, not lost
    assert await slow.size("q") == 1


@run_async
async def test_fanout_reaches_the_consumers_subscribed(make_transport: MakeTransport) -> None:
    """A fanout message reaches each consumer of a queue bound to the exchange that is
    consuming when it is published (PUBLISH, as kombu's), through a claim like any other."""
    one, two, producer = make_transport(), make_transport(), make_transport()
    bus = Exchange("bus", "fanout")
    await producer.declare_exchange(bus)
    queues = [Broadcast("bus"), Broadcast("bus")]
    await one.declare_queue(queues[0])
    await two.declare_queue(queues[1])
    # before anyone consumes: nobody hears it
    assert await producer.publish(out("early", "", "bus")) == 0
    assert await one.get([queues[0].name], 1, timeout=0) == []
    assert await two.get([queues[1].name], 1, timeout=0) == []  # subscribed from now on
    assert await producer.publish(out("x", "", "bus")) == 2
    got_one = await one.get([queues[0].name], 1, timeout=5)
    got_two = await two.get([queues[1].name], 1, timeout=5)
    assert labels(got_one) == labels(got_two) == ["x"]
    await one.ack(got_one)
    await two.ack(got_two)


@run_async
async def test_a_batch_counts_queues_and_subscribers(transport: Transport) -> None:
    await transport.declare_queue(Queue("q"))
    direct = Exchange("d")
    await transport.declare_queue(Queue("r", exchange=direct, routing_key="k"))
    await transport.declare_queue(Queue("s", exchange=direct, routing_key="k"))
    await transport.declare_exchange(Exchange("bus", "fanout"))
    items = [out("a", "q"), out("b", "nope", "d"), out("c", "k", "d"), out("e", "", "bus")]
    assert await transport.publish_batch(items) == [1, 0, 2, 0]
    assert transport.publish_sync([out("f", "q")]) == [1]
    assert await transport.size("q") == 2


@run_async
async def test_a_record_of_a_dead_kombu_consumer_is_restored(transport: Transport) -> None:
    """A record of kombu's ``unacked`` older than the visibility timeout, as a dead Celery
    worker leaves it (``[envelope, exchange, routing key]``, tagged by the envelope's own
    tag), goes back to its queue first in line, marked redelivered and counted."""
    assert isinstance(transport, KombuRedisTransport)
    await transport.declare_queue(Queue("q", exchange=Exchange("q"), routing_key="q"))
    await transport.publish_batch([out("waiting")])
    names = transport.names
    envelope = {
        "body": "W1tdLCB7fSwge31d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "tests.contract", "id": f"dead-{uuid.uuid4().hex[:6]}"},
        "properties": {
            "delivery_info": {"exchange": "q", "routing_key": "q"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "0c8d8b4e-5c0f-4f5e-9a57-3b1f4c1f2d11",  # kombu's own tag
        },
    }
    client = redis.Redis.from_url(REDIS_URL)
    try:
        tag = "0c8d8b4e-5c0f-4f5e-9a57-3b1f4c1f2d11"
        client.hset(names.unacked, tag, json.dumps([envelope, "q", "q"]))
        client.zadd(names.unacked_index, {tag: time.time() - 7200})
    finally:
        client.close()
    first, second = await transport.get(["q"], 2, timeout=1)
    assert first.decode().id.startswith("dead-")  # restored first in line
    assert (first.delivery_count, first.redelivered) == (2, True)
    assert first.decode().headers["redelivered"] is True
    assert labels([second]) == ["waiting"]
    await transport.ack([first, second])
