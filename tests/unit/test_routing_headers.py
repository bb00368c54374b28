"""Headers exchanges: the matcher against an independent oracle, bindings with arguments, their
storage by the SQLite and Redis brokers, and one task routed by its headers through a worker."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeriac.errors import ImproperlyConfigured
from celeriac.protocol.message import Message, task_message
from celeriac.routing import Binding, Exchange, Queue, headers_match, route
from celeriac.testing import memory_app, worker_thread
from celeriac.transports.base import Outgoing
from celeriac.transports.redis import scripts as redis_scripts
from celeriac.transports.sqlite import SQLiteTransport
from celeriac.transports.topology import QueueInfo, Topology

# --- the oracle ---------------------------------------------------------------------------------


def same(expected: Any, found: Any) -> bool:
    """AMQP equality, spelled out differently from the implementation: same Python type (lists
    and tuples both being arrays), then equal, element by element for arrays and tables."""
    if isinstance(expected, list | tuple) and isinstance(found, list | tuple):
        return len(expected) == len(found) and all(map(same, expected, found))
    if isinstance(expected, dict) and isinstance(found, dict):
        return expected.keys() == found.keys() and all(
            same(v, found[k]) for k, v in expected.items()
        )
    return type(expected) is type(found) and expected == found


def oracle(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """The rules as RabbitMQ's documentation states them, one argument at a time."""
    mode = arguments.get("x-match", "all")
    considered = [
        (name, value)
        for name, value in arguments.items()
        if name != "x-match" and (mode.endswith("-with-x") or not name.startswith("x-"))
    ]
    hits = [
        name in headers and (value is None or same(value, headers[name]))
        for name, value in considered
    ]
    return all(hits) if mode.startswith("all") else any(hits)


scalars = st.sampled_from([None, True, False, 0, 1, 1.0, 0.0, "1", "pdf", "", "True"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2), max_leaves=4)
names = st.sampled_from(["kind", "region", "x-tenant", "n"])
header_maps = st.dictionaries(names, values, max_size=4)
modes = st.sampled_from([None, "all", "any", "all-with-x", "any-with-x"])


@st.composite
def argument_maps(draw: st.DrawFn) -> dict[str, Any]:
    arguments = draw(st.dictionaries(names, values, max_size=4))
    mode = draw(modes)
    if mode is not None:
        arguments["x-match"] = mode
    return arguments


def twin(value: Any) -> Any:
    """A value Python's ``==`` confuses with ``value`` but AMQP does not (or ``value`` itself)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [twin(v) for v in value]
    return value


@st.composite
def matched_cases(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Arguments, and headers built from them: each argument's header kept, dropped, replaced
    by its type twin, or by anything; so near misses are common, not left to chance."""
    arguments = draw(argument_maps())
    headers = draw(header_maps)
    for name, value in arguments.items():
        choice = draw(st.sampled_from(["keep", "drop", "twin", "other"]))
        if choice == "keep":
            headers[name] = value
        elif choice == "drop":
            headers.pop(name, None)
        elif choice == "twin":
            headers[name] = twin(value)
    return arguments, headers


def test_oracle_sanity() -> None:
    assert same([1, "a"], (1, "a"))
    assert not same(1, True)
    assert not same(1, 1.0)
    assert oracle({}, {})
    assert not oracle({"x-match": "any"}, {"a": 1})


@given(matched_cases())
def test_headers_match_agrees_with_the_oracle(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    arguments, headers = case
    assert headers_match(arguments, headers) == oracle(arguments, headers)


# --- laws ---------------------------------------------------------------------------------------


@given(argument_maps(), header_maps)
def test_headers_holding_every_argument_match_all(
    arguments: dict[str, Any], extra: dict[str, Any]
) -> None:
    """A message whose headers include the binding's arguments matches, whatever else it has."""
    all_of = {**arguments, "x-match": "all-with-x"}
    assert headers_match(all_of, {**extra, **arguments})


@given(argument_maps(), header_maps)
def test_all_implies_any_when_something_is_compared(
    arguments: dict[str, Any], headers: dict[str, Any]
) -> None:
    plain = {k: v for k, v in arguments.items() if not k.startswith("x-")}
    if plain and headers_match({**plain, "x-match": "all"}, headers):
        assert headers_match({**plain, "x-match": "any"}, headers)


@given(argument_maps(), header_maps, st.sampled_from(["all", "any"]))
def test_x_arguments_change_nothing_without_with_x(
    arguments: dict[str, Any], headers: dict[str, Any], mode: str
) -> None:
    plain = {k: v for k, v in arguments.items() if not k.startswith("x-")}
    noisy = {**plain, "x-tenant": "a", "x-other": 1}
    assert headers_match({**plain, "x-match": mode}, headers) == headers_match(
        {**noisy, "x-match": mode}, headers
    )


# --- examples -----------------------------------------------------------------------------------

PDF_EN = {"kind": "pdf", "region": "eu"}


@pytest.mark.parametrize(
    ("arguments", "headers", "expected"),
    [
        ({"x-match": "all", **PDF_EN}, {"kind": "pdf", "region": "eu", "id": "1"}, True),
        ({"x-match": "all", **PDF_EN}, {"kind": "pdf"}, False),  # region missing
        ({"x-match": "all", **PDF_EN}, {"kind": "pdf", "region": "us"}, False),
        (PDF_EN, {"kind": "pdf", "region": "eu"}, True),  # all is the default
        (PDF_EN, {"kind": "pdf"}, False),
        ({"x-match": "any", **PDF_EN}, {"kind": "pdf"}, True),
        ({"x-match": "any", **PDF_EN}, {"region": "eu", "kind": "txt"}, True),
        ({"x-match": "any", **PDF_EN}, {"kind": "txt"}, False),
        ({"x-match": "any", **PDF_EN}, {}, False),
        ({}, {}, True),  # no argument: all matches every message
        ({"x-match": "all"}, {"kind": "pdf"}, True),
        ({"x-match": "any"}, {"kind": "pdf"}, False),  # ...and any none
        # x- arguments are ignored, unless x-match says -with-x
        ({"x-tenant": "a", "kind": "pdf"}, {"kind": "pdf"}, True),
        ({"x-match": "any", "x-tenant": "a"}, {"x-tenant": "a"}, False),
        ({"x-match": "all-with-x", "x-tenant": "a", "kind": "pdf"}, {"kind": "pdf"}, False),
        ({"x-match": "all-with-x", "x-tenant": "a"}, {"x-tenant": "a"}, True),
        ({"x-match": "any-with-x", "x-tenant": "a"}, {"x-tenant": "a"}, True),
        # equality sees types, as RabbitMQ's =:= does
        ({"n": 1}, {"n": 1}, True),
        ({"n": 1}, {"n": True}, False),
        ({"n": True}, {"n": 1}, False),
        ({"n": 1}, {"n": 1.0}, False),
        ({"n": 1}, {"n": "1"}, False),
        ({"n": [1, "a"]}, {"n": (1, "a")}, True),
        ({"n": [1]}, {"n": [True]}, False),
        ({"n": {"a": 1}}, {"n": {"a": 1}}, True),
        ({"n": {"a": 1}}, {"n": {"a": 1.0}}, False),
        # a void (None) argument asks only for presence
        ({"n": None}, {"n": "anything"}, True),
        ({"n": None}, {"n": None}, True),
        ({"n": None}, {}, False),
        ({"n": "x"}, {"n": None}, False),
    ],
)
def test_headers_examples(
    arguments: dict[str, Any], headers: dict[str, Any], expected: bool
) -> None:
    assert headers_match(arguments, headers) is expected


def test_route_on_a_headers_exchange_ignores_the_routing_key() -> None:
    bindings = [
        Binding("h", "pdf", "", {"kind": "pdf"}),
        Binding("h", "eu", "eu", {"region": "eu"}),
        Binding("h", "either", "", {"x-match": "any", "kind": "pdf", "region": "eu"}),
        Binding("h", "everything", ""),
    ]
    pdf_eu = {"kind": "pdf", "region": "eu"}
    assert route("headers", bindings, "eu", pdf_eu) == ["pdf", "eu", "either", "everything"]
    assert route("headers", bindings, "whatever", {"kind": "txt"}) == ["everything"]
    assert route("headers", bindings[:3], "eu", {"region": "us"}) == []
    assert route("headers", bindings[:3], "eu") == []
    # other exchange types ignore arguments and headers
    assert route("direct", bindings, "eu", {"kind": "pdf"}) == ["eu"]


# --- Binding and Queue --------------------------------------------------------------------------


def test_binding_arguments_compare_by_type_and_ignore_order() -> None:
    a = Binding("h", "q", "", {"kind": "pdf", "n": 1})
    assert a == Binding("h", "q", "", {"n": 1, "kind": "pdf"})
    assert hash(a) == hash(Binding("h", "q", "", {"n": 1, "kind": "pdf"}))
    assert a != Binding("h", "q", "", {"kind": "pdf", "n": True})
    assert a != Binding("h", "q", "", {"kind": "pdf", "n": 1.0})
    assert a != Binding("h", "q", "")
    assert Binding("h", "q", "", {"n": [1]}) == Binding("h", "q", "", {"n": (1,)})
    assert len({a, Binding("h", "q", "", {"kind": "pdf", "n": True})}) == 2
    assert Binding("d", "q", "k") == Binding("d", "q", "k", {})


def test_binding_copies_its_arguments() -> None:
    arguments: dict[str, Any] = {"kind": "pdf"}
    binding = Binding("h", "q", "", arguments)
    arguments["kind"] = "txt"
    assert binding.arguments == {"kind": "pdf"}


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-match": "some"},  # RabbitMQ refuses the binding
        {"x-match": 1},
        {"when": object()},  # no JSON value: could match no header, could not be stored
        {"ratio": float("nan")},
        {"n": {1: "a"}},
        {3: "three"},
    ],
)
def test_bad_binding_arguments_are_a_configuration_error(arguments: Any) -> None:
    with pytest.raises(ImproperlyConfigured):
        Binding("h", "q", "", arguments)


def test_queue_binding_arguments_and_the_match_everything_binding() -> None:
    by_kind = Exchange("by-kind", "headers")
    pdf = Queue("pdf", exchange=by_kind, binding_arguments={"kind": "pdf"})
    assert pdf.all_bindings() == (Binding("by-kind", "pdf", "pdf", {"kind": "pdf"}),)
    # no arguments at all: AMQP's match-everything binding, as kombu makes it
    assert Queue("all", exchange=by_kind).all_bindings() == (Binding("by-kind", "all", "all"),)
    # bindings to its own headers exchange: no match-everything binding beside them
    own = Binding("by-kind", "pdf", "", {"kind": "pdf"})
    elsewhere = Binding("audit", "pdf", "#")
    queue = Queue("pdf", exchange=by_kind, bindings=(own, elsewhere))
    assert queue.all_bindings() == (own, elsewhere)
    assert queue.exchanges() == (by_kind,)
    # other exchange types keep their own binding beside the extra ones, as before
    topic = Queue("eu", exchange=Exchange("t", "topic"), bindings=(Binding("t", "eu", "x"),))
    assert topic.all_bindings() == (Binding("t", "eu", "eu"), Binding("t", "eu", "x"))


# --- Topology: routing per message, and storage -------------------------------------------------


def headed(label: str, **headers: Any) -> Message:
    return task_message(
        task="tests.headers",
        task_id=label,
        body=b"[[], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        extra_headers=headers,
    )


def headers_topology() -> Topology:
    topology = Topology()
    by_kind = Exchange("by-kind", "headers")
    topology.declare_queue(Queue("pdf", exchange=by_kind, binding_arguments={"kind": "pdf"}))
    topology.declare_queue(
        Queue(
            "eu-or-txt",
            exchange=by_kind,
            binding_arguments={"x-match": "any", "region": "eu", "kind": "txt"},
        )
    )
    return topology


def test_plan_routes_each_message_by_its_own_headers() -> None:
    items = [
        Outgoing(headed("a", kind="pdf"), "by-kind", ""),
        Outgoing(headed("b", kind="pdf", region="eu"), "by-kind", ""),
        Outgoing(headed("c", kind="txt"), "by-kind", ""),
        Outgoing(headed("d", kind="doc"), "by-kind", ""),  # same exchange and key: no cache
        Outgoing(headed("e"), "by-kind", ""),
    ]
    plans = headers_topology().plan(items)
    assert [[d.queue for d in plan] for plan in plans] == [
        ["pdf"],
        ["pdf", "eu-or-txt"],
        ["eu-or-txt"],
        [],
        [],
    ]


def test_protocol_headers_are_matched_too() -> None:
    """The task name is a header like any other: a binding may route by it."""
    topology = Topology()
    exchange = Exchange("tasks", "headers")
    topology.declare_queue(
        Queue("mine", exchange=exchange, binding_arguments={"task": "tests.headers"})
    )
    [plan] = topology.plan([Outgoing(headed("a"), "tasks", "")])
    assert [d.queue for d in plan] == ["mine"]


def test_redis_topology_keeps_arguments_and_reads_old_documents() -> None:
    topology = headers_topology()
    topology.declare_queue(Queue("plain", exchange=Exchange("d"), routing_key="k"))
    blob = redis_scripts.encode_topology(topology)
    stored = redis_scripts.decode_topology(b"v1", blob, b"e1")
    assert stored.topology.bindings() == topology.bindings()
    assert stored.topology.exchanges == {"by-kind": "headers", "d": "direct"}
    assert b'["d","plain","k"]' in blob  # a binding without arguments is stored as before
    old = b'{"exchanges":{"d":"direct"},"queues":[["q",9,false]],"bindings":[["d","q","k"]]}'
    assert redis_scripts.decode_topology(b"v", old, b"e").topology.bindings() == [
        Binding("d", "q", "k")
    ]


def test_sqlite_keeps_arguments_and_upgrades_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the schema before bindings had arguments
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "INSERT INTO meta VALUES ('schema_version', 1), ('topology_version', 1);"
            "CREATE TABLE exchanges (name TEXT PRIMARY KEY, type TEXT NOT NULL);"
            "INSERT INTO exchanges VALUES ('d', 'direct');"
            "CREATE TABLE queues (name TEXT PRIMARY KEY, max_priority INTEGER NOT NULL,"
            " auto_delete INTEGER NOT NULL);"
            "INSERT INTO queues VALUES ('q', 9, 0);"
            "CREATE TABLE bindings (exchange TEXT NOT NULL, queue TEXT NOT NULL,"
            " routing_key TEXT NOT NULL, UNIQUE (exchange, queue, routing_key));"
            "INSERT INTO bindings VALUES ('d', 'q', 'k');"
        )
    conn.close()

    async def run() -> list[int]:
        transport = SQLiteTransport(f"sqlite:///{path}")
        try:
            by_kind = Exchange("by-kind", "headers")
            await transport.declare_exchange(by_kind)
            # two bindings of one queue differing only in arguments: the old UNIQUE refused it
            await transport.bind(Binding("by-kind", "q", "", {"kind": "pdf"}))
            await transport.bind(Binding("by-kind", "q", "", {"kind": "txt"}))
            return await transport.publish_batch(
                [
                    Outgoing(headed("a"), "d", "k"),
                    Outgoing(headed("b", kind="txt"), "by-kind", ""),
                    Outgoing(headed("c", kind="doc"), "by-kind", ""),
                ]
            )
        finally:
            await transport.close()

    assert asyncio.run(run()) == [1, 1, 0]
    reopened = SQLiteTransport(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        topology = reopened._load_topology(conn, cached=False)
    conn.close()
    assert topology.bindings() == [
        Binding("d", "q", "k"),
        Binding("by-kind", "q", "", {"kind": "pdf"}),
        Binding("by-kind", "q", "", {"kind": "txt"}),
    ]
    assert topology.queues["q"] == QueueInfo("q", 9, False)


# --- end to end ---------------------------------------------------------------------------------


def test_a_task_sent_with_headers_lands_in_the_queue_bound_for_them() -> None:
    by_kind = Exchange("by-kind", "headers")
    pdf_only = Binding("by-kind", "pdf", "", {"kind": "pdf"})
    app = memory_app(
        "headers",
        task_queues=[
            Queue("pdf", exchange=by_kind, bindings=(pdf_only,)),
            Queue("txt", exchange=by_kind, binding_arguments={"kind": "txt"}),
        ],
    )
    ran: list[tuple[str, str]] = []
    lock = threading.Lock()

    @app.task(bind=True)
    def render(self: Any, name: str) -> str:
        with lock:
            ran.append((name, str(self.request.delivery_info.get("queue"))))
        return name.upper()

    try:
        with worker_thread(app, queues=["pdf", "txt"]):
            pdf = render.apply_async(("a.pdf",), headers={"kind": "pdf"}, exchange="by-kind")
            txt = render.apply_async(("b.txt",), headers={"kind": "txt"}, exchange="by-kind")
            assert pdf.get(timeout=10) == "A.PDF"
            assert txt.get(timeout=10) == "B.TXT"
        # no match-everything binding: nothing reached the other queue
        assert sorted(ran) == [("a.pdf", "pdf"), ("b.txt", "txt")]
    finally:
        app.close()
