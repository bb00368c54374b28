"""The RabbitMQ beat store's snapshot and commands, without a broker: application order,
de-duplication of a command delivered twice, a sender's pending view, the JSON layout."""

from __future__ import annotations

import pytest

from celeriac.beat.amqp_state import COMPRESS_OVER, SENDERS_KEPT, Command, Snapshot, newest
from celeriac.errors import DecodeError

ENTRY = {"task": "tasks.add", "schedule": {"every": 30.0}, "args": [1, 2]}


def test_a_command_delivered_twice_is_applied_once() -> None:
    state = Snapshot()
    first = Command.put("s1", 1, {"a": ENTRY})
    assert state.apply(first) is True
    assert state.version == 1
    # redelivered after a leader died between its snapshot write and its ack
    assert state.apply(Command.decode(first.encode())) is False
    assert state.version == 1
    # a later command of the same sender applies; an older one, never again
    assert state.apply(Command.put("s1", 2, {"a": {**ENTRY, "args": [3]}})) is True
    assert state.apply(Command.put("s1", 1, {"a": {"task": "stale"}})) is False
    assert state.entries["a"]["args"] == [3]
    assert state.done("s1") == 2 and state.done("nobody") == 0


def test_admit_tells_next_repeat_and_early_in_each_senders_order() -> None:
    state = Snapshot()
    assert state.admit(Command.put("new", 7, {})) == "next"  # an unknown sender has no order
    state.apply(Command.put("s", 1, {"a": ENTRY}))
    assert state.admit(Command.put("s", 1, {})) == "repeat"
    assert state.admit(Command.put("s", 2, {})) == "next"
    assert state.admit(Command.put("s", 3, {})) == "early"  # 2 is still out of the queue


def test_delete_removes_entries_and_their_runs_and_runs_never_move_back() -> None:
    state = Snapshot()
    state.apply(Command.put("s", 1, {"a": ENTRY, "b": ENTRY}))
    state.record_runs({"a": 100.0, "b": 100.0})
    state.record_runs({"a": 50.0})  # a paused old leader's late, earlier record
    assert state.runs == {"a": 100.0, "b": 100.0}
    version = state.version
    assert state.apply(Command.record("old-leader", 1, {"b": 150.0, "a": 90.0}))
    assert state.runs == {"a": 100.0, "b": 150.0}
    assert state.version == version  # runs are not an entry change
    state.apply(Command.delete("s", 2, ["a"]))
    assert set(state.entries) == {"b"} and "a" not in state.runs
    assert state.version == version + 1


def test_a_view_applies_waiting_and_own_commands_once_without_changing_the_snapshot() -> None:
    state = Snapshot()
    state.apply(Command.put("leader", 1, {"a": ENTRY}))
    mine = [Command.put("me", 1, {"b": ENTRY}), Command.delete("me", 2, ["a"])]
    waiting = [Command.put("other", 1, {"c": ENTRY}), mine[0]]  # my first is in the queue too
    view = state.view(waiting, mine)
    assert set(view.entries) == {"b", "c"}
    assert view.version == state.version + 3  # three distinct changes, mine[0] counted once
    assert set(state.entries) == {"a"} and state.done("me") == 0  # the snapshot is untouched


def test_the_sender_table_keeps_the_most_recent_senders() -> None:
    state = Snapshot()
    for n in range(SENDERS_KEPT + 10):
        state.serial += 1
        state.apply(Command.put(f"s{n}", 1, {"a": ENTRY}))
    assert len(state.applied) == SENDERS_KEPT
    assert "s0" not in state.applied and f"s{SENDERS_KEPT + 9}" in state.applied


def test_snapshots_round_trip_and_big_ones_are_compressed() -> None:
    state = Snapshot(serial=7, leader="beat@host")
    state.apply(Command.put("s", 1, {f"e{n}": {**ENTRY, "n": n} for n in range(2000)}))
    state.record_runs({"e1": 1_700_000_000.5})
    body, encoding = state.encode()
    assert encoding == "zlib" and len(body) < COMPRESS_OVER
    again = Snapshot.decode(body, encoding)
    assert again == state
    small, plain = Snapshot().encode()
    assert plain == "utf-8" and Snapshot.decode(small, plain) == Snapshot()
    assert newest([Snapshot(serial=3), again, Snapshot(serial=1)]) is again
    assert newest([]) is None


@pytest.mark.parametrize(
    ("body", "encoding", "says"),
    [
        (b"not json", "utf-8", "not valid JSON"),
        (b"[1, 2]", "utf-8", "not a JSON object"),
        (b'{"entries": {"a": 1}}', "utf-8", "malformed"),
        (b"xx", "zlib", "does not decompress"),
    ],
)
def test_an_unreadable_snapshot_says_why(body: bytes, encoding: str, says: str) -> None:
    with pytest.raises(DecodeError, match=says):
        Snapshot.decode(body, encoding)


def test_an_unreadable_command_says_why_and_a_value_that_is_not_json_fails_before_sending() -> None:
    with pytest.raises(DecodeError, match="op/sender/seq"):
        Command.decode(b'{"op": "drop", "sender": "s", "seq": 1}')
    with pytest.raises(DecodeError, match="malformed"):
        Command.decode(b'{"op": "runs", "sender": "s", "seq": 1, "runs": {"a": "soon"}}')
    with pytest.raises(ValueError, match="JSON-serialisable"):
        Command.put("s", 1, {"a": {"schedule": object()}}).encode()
