"""``task-sent``: with ``task_send_sent_event`` on, a producer sends Celery's event for each task it
sends (one ``task.sent`` message for a send, ``task.multi`` lists for a batch), named
``gen<pid>@<host>``; off (the default), it builds nothing. On the memory broker's real fan-out."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from celeriac import Celeriac
from celeriac.events.event import event_exchange
from celeriac.testing import memory_app

SENT_FIELDS = {
    "hostname", "utcoffset", "pid", "clock", "uuid", "root_id", "parent_id", "name", "args",
    "kwargs", "retries", "eta", "expires", "queue", "exchange", "routing_key", "timestamp", "type",
}  # fmt: skip


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = memory_app("sent", task_send_sent_event=True)

    @application.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield application
    application.close_sent_events()
    application.close()


async def collect(app: Celeriac, send: Any, expect: int) -> list[tuple[str, Any]]:
    """``(routing key, body)`` of the ``expect`` messages that ``send()`` makes."""
    transport = app.create_transport()
    await transport.connect()
    got: list[tuple[str, Any]] = []
    try:
        async with transport.listen(event_exchange(), ["task.#"]) as listener:
            await send()
            while len(got) < expect:
                message = await listener.get(5)
                assert message is not None, f"only {len(got)} of {expect} messages came"
                key = message.properties["delivery_info"]["routing_key"]
                got.append((key, orjson.loads(message.body)))
            assert await listener.get(0.05) is None
    finally:
        await transport.close()
    return got


def test_a_send_makes_one_task_sent_event_with_celerys_fields(app: Celeriac) -> None:
    sent: list[str] = []

    async def send() -> None:
        result = await asyncio.to_thread(app.send_task, "t.add", (2, 3), {"z": 1}, countdown=60)
        sent.append(result.id)

    [(key, event)] = asyncio.run(collect(app, send, 1))
    assert key == "task.sent"
    assert set(event) == SENT_FIELDS
    assert event["type"] == "task-sent" and event["uuid"] == sent[0]
    assert (event["name"], event["args"], event["kwargs"]) == ("t.add", "(2, 3)", "{'z': 1}")
    assert (event["queue"], event["routing_key"], event["retries"]) == ("celery", "celery", 0)
    assert event["eta"] is not None and event["expires"] is None
    assert event["hostname"] == f"gen{os.getpid()}@{socket.gethostname()}"


def test_a_batch_goes_out_as_task_multi_lists_of_24(app: Celeriac) -> None:
    async def send() -> None:
        await asyncio.to_thread(app.send_many, [("t.add", (n, n), {}) for n in range(30)])

    got = asyncio.run(collect(app, send, 2))
    assert [key for key, _ in got] == ["task.multi", "task.multi"]
    assert [len(body) for _, body in got] == [24, 6]
    clocks = [event["clock"] for _, body in got for event in body]
    assert clocks == sorted(clocks) and len(set(clocks)) == 30


def test_an_async_send_makes_its_event_without_blocking_the_loop(app: Celeriac) -> None:
    async def send() -> None:
        await app.asend_task("t.add", (1, 2))

    [(key, event)] = asyncio.run(collect(app, send, 1))
    assert key == "task.sent" and event["args"] == "(1, 2)"


def test_with_the_setting_off_nothing_is_built() -> None:
    app = memory_app("quiet")
    try:
        app.send_task("t.add", (1, 2))
        assert app._sent_events is None
    finally:
        app.close()
