"""The bulk path (``send_many``): the same messages as the single path, byte for byte."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from celeriac import Celeriac, Queue
from celeriac.context import Request, running
from celeriac.protocol.message import Message, new_id, new_ids, task_message
from celeriac.protocol.template import MessageTemplate
from celeriac.transports.base import Delivery, Outgoing

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((1, "two", 3.5, None, [True]), {"k": {"nested": ["x"]}}),
    (('quote " backslash \\ 100% é \u2603 \0 nul',), {"pct": "%s %b %%"}),
    ((Decimal("1.10"),), {"set": {1}}),
    (("x" * 2000,), {}),  # the repr is cut at 1024 characters
]
OPTIONS: list[dict[str, Any]] = [
    {},
    {"countdown": 30},
    {"eta": datetime(2030, 1, 2, 3, 4, 5)},
    {"expires": 60},
    {"expires": NOW + timedelta(hours=1)},
    {"priority": 7, "queue": "other"},
    {"group_id": "g-1", "root_id": "r-1", "parent_id": "p-1", "retries": 2},
    {"headers": {"x-trace": "100% sure", "nested": {"a": [1, 2]}}},
    {"reply_to": "replies", "time_limit": 10, "soft_time_limit": 5, "ignore_result": True},
    {"serializer": "pickle", "compression": "gzip"},
]


def single_and_batch(
    app: Celeriac, name: str, args: Any, kwargs: Any, options: dict[str, Any]
) -> tuple[Outgoing, Outgoing]:
    task_id = new_id()
    single, _ = app.prepare(name, args, kwargs, _now=NOW, task_id=task_id, **options)
    sender = app._batch_sender(name, options, NOW)
    assert sender is not None
    return single, sender.outgoing(task_id, args, kwargs)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize(("args", "kwargs"), CALLS, ids=range(len(CALLS)))
def test_a_batch_message_is_the_single_message_byte_for_byte(
    app: Celeriac, options: dict[str, Any], args: Any, kwargs: Any
) -> None:
    @app.task(name="t.add")
    def add(*a: Any, **k: Any) -> None: ...

    single, batched = single_and_batch(app, "t.add", args, kwargs, options)
    assert batched.envelope() == single.message.to_wire()
    assert batched.message.to_wire() == single.message.to_wire()
    assert batched.message == single.message
    assert (batched.exchange, batched.routing_key, batched.due_at) == (
        single.exchange,
        single.routing_key,
        single.due_at,
    )


def test_a_batch_inside_a_task_takes_its_root_and_parent(app: Celeriac) -> None:
    parent = Request(id="parent-id", task="t.parent", root_id="root-id")
    with running(parent):
        single, batched = single_and_batch(
            app, "t.other", (1,), {}, {"link": app.signature("t.cb")}
        )
    assert batched.envelope() == single.message.to_wire()
    assert batched.message.headers["root_id"] == "root-id"
    assert batched.message.headers["parent_id"] == "parent-id"


def test_a_header_overriding_a_placeholder_falls_back_to_the_single_path(app: Celeriac) -> None:
    assert app._batch_sender("t.x", {"headers": {"argsrepr": "hidden"}}, NOW) is None
    results = app.send_many([("t.x", (1,), {}), ("t.x", (2,), {})], headers={"argsrepr": "hidden"})
    messages = [d.decode() for d in received(app)]
    assert [m.id for m in messages] == [r.id for r in results]
    assert {m.headers["argsrepr"] for m in messages} == {"hidden"}


def test_the_template_is_cut_at_every_placeholder() -> None:
    def make(task_id: str, argsrepr: str, kwargsrepr: str, body: bytes) -> Message:
        return task_message(
            task="t.%s",  # a '%' in the shared part must survive the format
            task_id=task_id,
            body=body,
            content_type="application/json",
            content_encoding="utf-8",
            args_repr=argsrepr,
            kwargs_repr=kwargsrepr,
        )

    template = MessageTemplate.of(make)
    assert template is not None
    message, wire = template.build("an-id", "('a',)", "{}", b'[["a"],{},null]')
    assert wire == make("an-id", "('a',)", "{}", b'[["a"],{},null]').to_wire() == message.to_wire()
    assert message.headers["root_id"] == message.properties["correlation_id"] == "an-id"


def received(app: Celeriac, queue: str = "celery", count: int = 100) -> list[Delivery]:
    transport = app.create_transport()

    async def run() -> list[Delivery]:
        await transport.connect()
        got = await transport.get([queue], count, timeout=0)
        await transport.ack(got)
        return got

    return asyncio.run(run())


def test_send_many_keeps_the_order_and_gives_each_call_its_own_id(app: Celeriac) -> None:
    app.conf.task_routes = {"t.b": {"queue": "bees"}}
    app._router = None
    calls = [("t.a" if i % 3 else "t.b", (i,), {"i": i}) for i in range(30)]
    results = app.send_many(calls, priority=3)
    assert len({r.id for r in results}) == 30
    assert [r.task_name for r in results] == [name for name, _, _ in calls]
    a_side = [d.decode() for d in received(app)]
    b_side = [d.decode() for d in received(app, "bees")]
    assert [m.id for m in a_side] == [r.id for r in results if r.task_name == "t.a"]
    assert [m.id for m in b_side] == [r.id for r in results if r.task_name == "t.b"]
    assert all(m.priority == 3 for m in a_side + b_side)
    assert [m.headers["argsrepr"] for m in b_side] == [f"({i},)" for i in range(0, 30, 3)]


def test_send_many_with_a_callable_router_routes_each_call(app: Celeriac) -> None:
    def by_argument(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> Any:
        return {"queue": "odd" if args[0] % 2 else "even"}

    app.conf.task_routes = by_argument
    app.conf.task_queues = [Queue("odd"), Queue("even")]
    app._router = None
    app.send_many([("t.a", (i,), {}) for i in range(6)])
    assert [d.decode().headers["argsrepr"] for d in received(app, "odd")] == [
        "(1,)",
        "(3,)",
        "(5,)",
    ]
    assert len(received(app, "even")) == 3


def test_new_ids_are_uuid4_strings() -> None:
    ids = new_ids(1000) + [new_id() for _ in range(100)]
    assert len(set(ids)) == 1100
    for each in ids:
        parsed = uuid.UUID(each)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, each)
    assert new_ids(0) == []
