"""The event dispatcher on the memory broker's real transient fan-out: Celery's routing keys and
header, task events batched as ``task.multi`` (24 a message, the batches of a few milliseconds in
one publish), worker events one per message at once, groups switched at run time, and a bound on
what waits for a slow broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from celeriac.events import EventDispatcher
from celeriac.events.event import event_exchange
from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.transports.base import Listener
from celeriac.transports.memory import MemoryTransport

EXCHANGE = event_exchange()


def fresh() -> MemoryTransport:
    return MemoryTransport(f"memory://{uuid.uuid4().hex}")


async def drain(listener: Listener, expect: int, settle: float = 0.05) -> list[tuple[str, Any]]:
    """``(routing key, body)`` of the ``expect`` messages the test expects, then of any more
    that come within ``settle`` seconds (there should be none)."""
    got: list[tuple[str, Any]] = []
    while len(got) < expect or settle:
        message = await listener.get(5.0 if len(got) < expect else settle)
        if message is None:
            break
        info = message.properties.get("delivery_info") or {}
        assert message.headers == {"hostname": "w1@h"}
        got.append((str(info.get("routing_key")), orjson.loads(message.body)))
    return got


async def started(transport: MemoryTransport, **options: Any) -> EventDispatcher:
    dispatcher = EventDispatcher(transport, "w1@h", **options)
    dispatcher.start()
    return dispatcher


def test_a_few_task_events_go_out_together_as_one_task_multi_message() -> None:
    async def main() -> list[tuple[str, Any]]:
        transport = fresh()
        async with transport.listen(EXCHANGE, ["#"]) as listener:
            dispatcher = await started(transport)
            for n in range(3):
                dispatcher.send("task-started", uuid=f"t{n}")
            got = await drain(listener, 1)  # after the linger (5 ms)
            await dispatcher.close()
            return got

    [(key, body)] = asyncio.run(main())
    assert key == "task.multi"
    assert isinstance(body, list)
    assert [e["uuid"] for e in body] == ["t0", "t1", "t2"]
    assert [e["clock"] for e in body] == [1, 2, 3]
    first = body[0]
    assert list(first) == ["hostname", "utcoffset", "pid", "clock", "uuid", "timestamp", "type"]
    assert first["type"] == "task-started" and first["hostname"] == "w1@h"


def test_each_24_task_events_make_one_message() -> None:
    async def main() -> tuple[list[int], list[int]]:
        transport = fresh()
        async with transport.listen(EXCHANGE, ["task.#"]) as listener:
            dispatcher = await started(transport)
            for n in range(30):
                dispatcher.send("task-received", uuid=f"t{n}", name="x")
            handed = [count for _, _, count in dispatcher._pending]  # made at once
            got = await drain(listener, 2)
            await dispatcher.close()
            assert (dispatcher.messages_sent, dispatcher.publishes) == (2, 1)  # one call
            return handed, [len(body) for _, body in got]

    handed, sizes = asyncio.run(main())
    assert handed == [24]  # a full batch became a message at once
    assert sizes == [24, 6]  # and went out with the rest after the linger


def test_worker_events_go_one_per_message_under_their_own_key() -> None:
    async def main() -> list[tuple[str, Any]]:
        transport = fresh()
        async with transport.listen(EXCHANGE, ["worker.*"]) as listener:
            dispatcher = await started(transport, groups={"worker"})
            dispatcher.send("worker-online", freq=2.0)
            dispatcher.send("task-started", uuid="dropped: not in the groups")
            dispatcher.send("worker-heartbeat", freq=2.0, active=1)
            got = await drain(listener, 2)
            await dispatcher.close()
            return got

    got = asyncio.run(main())
    assert [key for key, _ in got] == ["worker.online", "worker.heartbeat"]
    assert [body["type"] for _, body in got] == ["worker-online", "worker-heartbeat"]


def test_task_events_switch_on_and_off_at_run_time() -> None:
    async def main() -> list[str]:
        transport = fresh()
        async with transport.listen(EXCHANGE, ["#"]) as listener:
            dispatcher = await started(transport, groups={"worker"})
            dispatcher.send("task-started", uuid="off")
            dispatcher.enable_group("task")
            assert dispatcher.sends("task")
            dispatcher.send("task-started", uuid="on")
            dispatcher.flush()
            dispatcher.send("task-started", uuid="buffered, then disabled")
            dispatcher.disable_group("task")
            dispatcher.send("task-started", uuid="off again")
            got = await drain(listener, 1)
            await dispatcher.close()
            return [e["uuid"] for _, body in got for e in body]

    assert asyncio.run(main()) == ["on"]


class SlowBroker(MemoryTransport):
    """The memory broker with a publish that waits for a gate: a broker slower than events."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = asyncio.Event()

    async def publish_transient(
        self, exchange: Exchange, routing_key: str, messages: Sequence[Message]
    ) -> None:
        await self.gate.wait()
        await super().publish_transient(exchange, routing_key, messages)


def test_a_slow_broker_costs_at_most_max_pending_messages_the_oldest_dropped() -> None:
    async def main() -> tuple[int, list[int]]:
        transport = SlowBroker(f"memory://{uuid.uuid4().hex}")
        async with transport.listen(EXCHANGE, ["#"]) as listener:
            dispatcher = await started(transport, groups={"worker"}, max_pending=5)
            await asyncio.sleep(0)
            for n in range(20):  # the first is taken by the waiting sender
                dispatcher.send("worker-heartbeat", n=n)
                await asyncio.sleep(0)
            transport.gate.set()
            got = await drain(listener, 6)
            await dispatcher.close()
            return dispatcher.dropped, [body["n"] for _, body in got]

    dropped, seen = asyncio.run(main())
    assert seen == [0, 15, 16, 17, 18, 19]
    assert dropped == 14


def test_nothing_is_published_for_a_listener_that_is_not_there() -> None:
    async def main() -> list[tuple[str, Any]]:
        transport = fresh()
        dispatcher = await started(transport, groups={"worker"})
        dispatcher.send("worker-online")
        assert await dispatcher.wait_sent(5)
        async with transport.listen(EXCHANGE, ["#"]) as listener:
            got = await drain(listener, 0)
        dispatcher.send("worker-heartbeat")  # listener closed: goes nowhere
        await dispatcher.close()
        assert dispatcher.events_sent == 2  # published, and kept by nobody
        assert transport.transient_listeners(EXCHANGE.name) == 0
        return got

    assert asyncio.run(main()) == []
