"""Celery's pidbox layout (requests, replies, who a request is for), the command table the CLI
and the worker share, and the revoked set's workflow revokes: pure code, no broker."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from celeriac.context import Request
from celeriac.control.meta import ALIASES, COMMANDS, compile_arguments, of_kind
from celeriac.control.pidbox import (
    ControlRequest,
    LamportClock,
    Mailbox,
    read_reply,
    reply_message,
)
from celeriac.errors import DecodeError
from celeriac.worker import commands_control  # noqa: F401  (registers the control commands)
from celeriac.worker.commands import HANDLERS
from celeriac.worker.state import ActiveRequests, RevokedSet
from celeriac.worker.statedb import load, save


def test_a_call_carries_celerys_body_and_headers() -> None:
    request = ControlRequest(
        "rate_limit",
        {"task_name": "t", "rate_limit": "1/s"},
        destination=["w1@h"],
        ticket="tk",
        reply_to={"exchange": "reply.celery.pidbox", "routing_key": "oid"},
        clock=7,
        expires=123.5,
    )
    message = request.to_message()
    assert message.headers == {"clock": 7, "expires": 123.5}
    assert message.content_type == "application/json"
    assert orjson.loads(message.body) == {
        "method": "rate_limit",
        "arguments": {"task_name": "t", "rate_limit": "1/s"},
        "destination": ["w1@h"],
        "pattern": None,
        "matcher": None,
        "ticket": "tk",
        "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid"},
    }
    assert ControlRequest.from_message(message) == request


def test_a_cast_has_no_ticket_nor_reply_to() -> None:
    body = orjson.loads(ControlRequest("revoke", {"task_id": "x"}).to_message().body)
    assert "ticket" not in body and "reply_to" not in body
    assert not ControlRequest("revoke").wants_reply


def test_who_a_request_is_for_follows_kombu() -> None:
    assert ControlRequest("ping").addressed_to("w1@h")
    assert ControlRequest("ping", destination=["w1@h"]).addressed_to("w1@h")
    assert not ControlRequest("ping", destination=["w2@h"]).addressed_to("w1@h")
    glob = ControlRequest("ping", pattern="w*@h", matcher="glob")
    assert glob.addressed_to("w1@h") and not glob.addressed_to("x1@h")
    pcre = ControlRequest("ping", pattern=r"w\d@", matcher="pcre")
    assert pcre.addressed_to("w1@h") and not pcre.addressed_to("wx@h")
    assert not ControlRequest("ping", pattern="(", matcher="pcre").addressed_to("w1@h")
    # a pattern without a matcher is ignored, as kombu ignores it: everyone
    assert ControlRequest("ping", pattern="zzz").addressed_to("w1@h")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[1, 2]", "'method'"),
        (b"not json", "not JSON"),
        (b'{"method": "x", "arguments": 3}', "'arguments' must be an object"),
    ],
)
def test_a_malformed_request_is_a_decode_error(body: bytes, reason: str) -> None:
    message = ControlRequest("ping").to_message()
    with pytest.raises(DecodeError, match=reason):
        ControlRequest.from_message(replace(message, body=body))


def test_a_reply_carries_the_node_its_ticket_and_clock() -> None:
    message = reply_message("w1@h", {"ok": "pong"}, "tk", 9)
    assert message.headers == {"ticket": "tk", "clock": 9}
    assert orjson.loads(message.body) == {"w1@h": {"ok": "pong"}}
    reply = read_reply(message)
    assert (reply.body, reply.ticket, reply.clock) == ({"w1@h": {"ok": "pong"}}, "tk", 9)
    bare = read_reply(replace(message, headers={}))  # a client that sent no ticket
    assert (bare.ticket, bare.clock) == (None, None)
    with pytest.raises(DecodeError, match="object of node names"):
        read_reply(replace(message, body=b"[1]"))
    with pytest.raises(DecodeError, match="only JSON"):
        read_reply(replace(message, content_type="application/x-yaml"))


def test_a_reply_of_objects_json_cannot_hold_still_goes() -> None:
    body = orjson.loads(reply_message("w", {"s": {1, 2}, "o": object(), 3: b"x"}, None, 1).body)
    assert sorted(body["w"]["s"]) == [1, 2]
    assert body["w"]["o"].startswith("<object")
    assert body["w"]["3"] == "x"


def test_the_names_follow_control_exchange() -> None:
    assert Mailbox().exchange.name == "celery.pidbox" and Mailbox().exchange.type == "fanout"
    box = Mailbox("ops")
    assert (box.exchange.name, box.reply_exchange.name) == ("ops.pidbox", "reply.ops.pidbox")
    assert box.reply_exchange.type == "direct"
    assert not box.exchange.durable and not box.reply_exchange.durable


def test_the_clock_moves_past_what_it_hears() -> None:
    clock = LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12
    assert str(clock) == "12"


# -- the command table ------------------------------------------------------------------------
def test_the_worker_answers_every_command_of_the_table_and_its_aliases() -> None:
    assert set(COMMANDS) <= set(HANDLERS)
    assert set(ALIASES) <= set(HANDLERS)
    assert set(of_kind("inspect")) >= {
        "ping",
        "active",
        "reserved",
        "scheduled",
        "registered",
        "stats",
        "active_queues",
        "revoked",
        "conf",
        "query_task",
    }
    assert set(of_kind("control")) >= {
        "revoke",
        "rate_limit",
        "time_limit",
        "pool_grow",
        "pool_shrink",
        "autoscale",
        "add_consumer",
        "cancel_consumer",
        "enable_events",
        "disable_events",
        "shutdown",
    }
    assert "hello" not in of_kind("inspect")  # for workers among themselves: not listed


def test_command_line_arguments_fill_celerys_argument_names() -> None:
    assert compile_arguments(COMMANDS["rate_limit"], ["t.add", "10/s"]) == {
        "task_name": "t.add",
        "rate_limit": "10/s",
    }
    assert compile_arguments(COMMANDS["time_limit"], ["t", "1.5", "3"]) == {
        "task_name": "t",
        "soft": 1.5,
        "hard": 3.0,
    }
    assert compile_arguments(COMMANDS["revoke"], ["a", "b"]) == {"task_id": ["a", "b"]}
    assert compile_arguments(COMMANDS["terminate"], ["KILL", "a"]) == {
        "signal": "KILL",
        "task_id": ["a"],
    }
    assert compile_arguments(COMMANDS["conf"], ["yes"]) == {"with_defaults": True}
    assert compile_arguments(COMMANDS["pool_grow"], []) == {}
    with pytest.raises(ValueError, match="takes arguments"):
        compile_arguments(COMMANDS["rate_limit"], ["t.add"])
    with pytest.raises(ValueError, match="takes arguments"):
        compile_arguments(COMMANDS["ping"], ["extra"])
    with pytest.raises(ValueError, match="argument n"):
        compile_arguments(COMMANDS["pool_grow"], ["x"])


# -- revokes of workflows ---------------------------------------------------------------------
def test_a_workflow_revoke_covers_its_tasks_by_root_or_parent() -> None:
    revoked = RevokedSet()
    assert not revoked.is_revoked("t1", "r1", "p1")
    revoked.add("r1", "root_id")
    revoked.add("p2", "parent_id")
    assert revoked.is_revoked("t1", "r1", None)
    assert revoked.is_revoked("t2", "other", "p2")
    assert not revoked.is_revoked("t3", "other", "p1")
    assert "r1" not in revoked  # a root id is not a revoked task id
    assert revoked.ids() == [] and sorted(revoked.workflows()) == [
        ("parent_id", "p2"),
        ("root_id", "r1"),
    ]
    assert revoked.why("t1", "r1", None) == "its workflow (root r1) was revoked"
    revoked.discard("r1", "root_id")
    assert not revoked.is_revoked("t1", "r1", None)


def test_revokes_made_elsewhere_keep_their_remaining_life() -> None:
    revoked = RevokedSet(expires=100.0)
    assert revoked.load([("a", "id", 90.0), ("b", "root_id", 1000.0), ("c", "id", -1.0)]) == 3
    assert "a" in revoked and revoked.is_revoked("x", "b") and "c" not in revoked
    [(task_id, age)] = revoked.ages()
    assert task_id == "a" and 9.0 <= age < 11.0
    assert revoked.load([("a", "id", 90.0)]) == 0  # known already: not new


def test_a_state_file_keeps_workflow_revokes(tmp_path: Path) -> None:
    path = str(tmp_path / "w.state")
    revoked = RevokedSet()
    revoked.add("t1")
    revoked.add("r1", "root_id")
    save(path, revoked)
    document = json.loads(Path(path).read_text())
    assert [entry[0] for entry in document["revoked"]] == ["t1", "r1"]
    assert document["revoked"][1][2] == "root_id"
    again = RevokedSet()
    assert load(path, again) == 2
    assert "t1" in again and again.is_revoked("t2", "r1")


def test_running_requests_are_timed_and_counted_by_name() -> None:
    active = ActiveRequests()
    before = time.time()
    active["a"] = Request(id="a", task="t.add")
    active["b"] = Request(id="b", task="t.add")
    active["a"] = Request(id="a", task="t.add")  # set again: not a second start
    assert active.total == {"t.add": 2}
    assert before <= active.started["a"] <= time.time()
    assert active.pop("a").id == "a" and "a" not in active.started
    assert active.pop("zz", None) is None
    del active["b"]
    assert active.started == {} and active.total == {"t.add": 2}
