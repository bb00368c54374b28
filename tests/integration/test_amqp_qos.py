"""A new RabbitMQ consumer takes no more than the worker's room, from its very first moment.

QoS is a property of the channel: a ``basic.consume`` on a channel that has none yet is pushed
every ready message of the queue. The transport used to send the first ``basic.qos`` after
its consumers started, so each new connection (a worker's start, every reconnect) swallowed
the backlog for a moment: a ``-c 2`` worker started on 500 messages held 478 unacked 1.5 s
later (found by the chaos suite: the other workers starved, and when that link died too,
everything it had run from the flood ran again).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

import amqp_broker
from celeriac.protocol.message import Message
from celeriac.routing import Queue
from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.base import Outgoing
from conftest import json_task_message, require_service

pytestmark = pytest.mark.amqp

BACKLOG = 60
ROOM = 4
WATCH = 1.0  # seconds the queue is watched for messages pushed past the room


def _message(n: int) -> Message:
    return json_task_message(f"qos-{n}", "qos.t")


def test_a_new_consumer_is_pushed_no_more_than_its_room() -> None:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    queue = f"qos-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[int, int]:
        producer = AMQPTransport(amqp_broker.URL)
        consumer = AMQPTransport(amqp_broker.URL)
        consumer.watch_capacity(lambda: ROOM)
        try:
            await producer.declare_queue(Queue(queue))
            items = [Outgoing(_message(n), "", queue) for n in range(BACKLOG)]
            await producer.publish_batch(items)
            got = await consumer.get([queue], ROOM, timeout=5)
            # whatever RabbitMQ pushes past the room would leave the queue's ready count
            fewest_ready = BACKLOG
            end = time.monotonic() + WATCH
            while time.monotonic() < end:
                fewest_ready = min(fewest_ready, await producer.size(queue))
                await asyncio.sleep(0.05)
            return len(got), fewest_ready
        finally:
            await consumer.close()
            await producer.close()

    try:
        taken, fewest_ready = asyncio.run(run())
    finally:
        amqp_broker.delete([queue, f"{queue}.dlq"])
    assert 1 <= taken <= ROOM
    assert BACKLOG - fewest_ready <= ROOM, f"{BACKLOG - fewest_ready} messages left the queue"
