"""Settings written for Celery on a real RabbitMQ: kombu's queue arguments and flags arrive as
kombu would declare them (read back with ``rabbitmqctl list_queues``)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import amqp_broker
from celeriac.routing import Queue, as_queue
from celeriac.transports.amqp import AMQPTransport
from conftest import require_service

kombu = pytest.importorskip("kombu")
kombu_common = pytest.importorskip("kombu.common")

pytestmark = pytest.mark.amqp


def listing() -> dict[str, list[str]]:
    """name -> [arguments, auto_delete, exclusive, durable] for the test vhost's queues."""
    out = amqp_broker.rabbitmqctl(
        "list_queues",
        "-q",
        "-p",
        amqp_broker.VHOST,
        "--no-table-headers",
        "name",
        "arguments",
        "auto_delete",
        "exclusive",
        "durable",
    )
    table = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 5:
            table[parts[0]] = parts[1:]
    return table


def test_kombu_queue_arguments_and_flags_reach_rabbitmq() -> None:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    tag = uuid.uuid4().hex[:8]
    with_arguments = as_queue(
        kombu.Queue(
            f"rt-args-{tag}",
            kombu.Exchange(f"rt-ex-{tag}"),
            routing_key="k",
            queue_arguments={"x-max-priority": 10, "x-dead-letter-exchange": "elsewhere"},
            message_ttl=60,
        )
    )
    broadcast = as_queue(kombu_common.Broadcast(f"rt-fan-{tag}"))
    own = Queue(f"rt-own-{tag}", auto_delete=True)  # celeriac's own auto-delete: exclusive
    theirs = as_queue(kombu.Queue(f"rt-theirs-{tag}", no_declare=True))

    async def declare_and_list() -> dict[str, list[str]]:
        transport = AMQPTransport(amqp_broker.URL)
        await transport.connect()
        try:
            for queue in (with_arguments, broadcast, own, theirs):
                await transport.declare_queue(queue)
            # listed while the connection that declared them is open (exclusive ones go with it)
            return await asyncio.to_thread(listing)
        finally:
            await transport.close()

    try:
        table = amqp_broker.in_thread(declare_and_list)
    finally:
        amqp_broker.delete(
            queues=[q.name for q in (with_arguments, broadcast, own)]
            + [f"{with_arguments.name}.dlq"],
            exchanges=[f"rt-ex-{tag}", f"rt-fan-{tag}"],
        )
    arguments, auto_delete, exclusive, durable = table[with_arguments.name]
    for given in (
        '{"x-max-priority",10}',  # kombu's value, not celeriac's 9
        '{"x-message-ttl",60000}',  # message_ttl=60 (seconds), as kombu declares it
        '{"x-dead-letter-exchange","elsewhere"}',
    ):
        assert given in arguments
    assert (auto_delete, exclusive, durable) == ("false", "false", "true")
    assert table[broadcast.name][1:] == ["true", "false", "true"]  # as kombu's Broadcast
    assert table[own.name][1:3] == ["true", "true"]
    assert theirs.name not in table  # no_declare: never declared
