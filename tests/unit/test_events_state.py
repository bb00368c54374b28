"""The cluster state folded from Celery-format events: workers alive or lost by Celery's freq*2
rule, tasks by id with their history and Celery's merge rules, bounded memory, counts, rates.

The events are built as a worker sends them (see ``celery-wire.md`` section 5) and go through
the receiver's ``event_from_message`` as a received one would.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from celeriac import states
from celeriac.errors import DecodeError
from celeriac.events import EventReceiver, LamportClock, State
from celeriac.events.event import (
    adjust_timestamp,
    decode_body,
    event_exchange,
    event_message,
    group_from,
    routing_key,
    utcoffset,
)
from celeriac.events.rates import RateMeter
from celeriac.testing import memory_app

NOW = 1_800_000_000.0


def worker_event(
    type_: str, hostname: str = "w1@h", at: float = NOW, **fields: Any
) -> dict[str, Any]:
    event = {
        "hostname": hostname,
        "utcoffset": 0,
        "pid": 42,
        "clock": 1,
        "freq": 2.0,
        "active": 0,
        "processed": 0,
        "loadavg": [0.1, 0.2, 0.3],
        "sw_ident": "py-celeriac",
        "sw_ver": "0.1.0",
        "sw_sys": "Linux",
        "timestamp": at,
        "type": type_,
        "local_received": at,
    }
    event.update(fields)
    return event


def task_event(
    type_: str, uuid: str, hostname: str = "w1@h", at: float = NOW, clock: int = 1, **fields: Any
) -> dict[str, Any]:
    return {
        "hostname": hostname,
        "utcoffset": 0,
        "pid": 42,
        "clock": clock,
        "uuid": uuid,
        **fields,
        "timestamp": at,
        "type": type_,
        "local_received": at,
    }


def received(uuid: str, name: str = "shop.add", **kw: Any) -> dict[str, Any]:
    fields = {
        "name": name,
        "args": "(2, 3)",
        "kwargs": "{}",
        "root_id": uuid,
        "parent_id": None,
        "retries": 0,
        "eta": None,
        "expires": None,
    }
    return task_event("task-received", uuid, **{**fields, **kw})


# -- the wire -----------------------------------------------------------------------------------
def test_names_keys_and_the_exchange_are_celerys() -> None:
    assert routing_key("task-succeeded") == "task.succeeded"
    assert routing_key("worker-heartbeat") == "worker.heartbeat"
    assert group_from("task-sent") == "task"
    exchange = event_exchange()
    assert (exchange.name, exchange.type, exchange.durable) == ("celeryev", "topic", True)
    message = event_message("w1@h", [{"type": "task-started", "uuid": "a"}])
    assert message.headers == {"hostname": "w1@h"}
    assert message.properties["delivery_mode"] == 1
    assert message.content_type == "application/json"
    assert orjson.loads(message.body) == [{"type": "task-started", "uuid": "a"}]


def test_a_body_may_be_one_event_or_a_list_and_anything_else_is_refused() -> None:
    one = event_message("w", {"type": "worker-online"})
    many = event_message("w", [{"type": "task-received"}, {"type": "task-started"}])
    assert [e["type"] for e in decode_body(one)] == ["worker-online"]
    assert [e["type"] for e in decode_body(many)] == ["task-received", "task-started"]
    with pytest.raises(DecodeError, match="not an event"):
        decode_body(event_message("w", [{"no": "type"}]))


def test_timestamps_move_by_the_difference_of_utc_offsets() -> None:
    here = utcoffset()
    # a sender two hours east of here (offset 2 less) stamped its local time: 2 h less here
    assert adjust_timestamp(NOW, here - 2) == NOW + 2 * 3600
    assert adjust_timestamp(NOW, here) == NOW


def test_the_receiver_adds_local_received_and_a_clock_and_replaces_a_clients() -> None:
    receiver = EventReceiver(memory_app("r").create_transport(), clock=LamportClock(10))
    before = time.time()
    event = receiver.event_from_message({"type": "worker-online", "hostname": "w", "clock": 50})
    assert event["local_received"] >= before
    assert receiver.clock.value == 51  # adjusted past the sender's
    missing = receiver.event_from_message({"type": "task-started", "uuid": "a"})
    assert missing["clock"] == 52  # filled in from its own
    sent = receiver.event_from_message({"type": "task-sent", "uuid": "a", "clock": 999})
    assert sent["clock"] == 52 - 1  # a client's clock is never trusted
    assert receiver.clock.value == 53


def test_a_lamport_clock_moves_past_what_it_sees() -> None:
    clock = LamportClock()
    assert [clock.forward(), clock.forward()] == [1, 2]
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12


# -- workers ------------------------------------------------------------------------------------
def test_a_worker_is_alive_until_twice_its_heartbeat_interval_passes_in_silence() -> None:
    state = State()
    (_, created), subject = state.event(worker_event("worker-online"))  # type: ignore[misc]
    assert created and subject == "online"
    state.event(worker_event("worker-heartbeat", at=NOW + 2, active=3, processed=10))
    w = state.workers["w1@h"]
    assert (w.active, w.processed, w.loadavg, w.sw_ident, w.pid) == (
        3,
        10,
        [0.1, 0.2, 0.3],
        "py-celeriac",
        42,
    )
    assert w.alive_at(NOW + 5.9)  # last heard at NOW + 2, freq 2.0: lost after NOW + 6
    assert not w.alive_at(NOW + 6.1)
    assert [x.hostname for x in state.alive_workers(NOW + 5)] == ["w1@h"]
    assert [x.hostname for x in state.lost_workers(NOW + 7)] == ["w1@h"]


def test_a_task_event_counts_as_a_heartbeat_and_offline_means_lost_at_once() -> None:
    state = State()
    state.event(worker_event("worker-online"))
    state.event(received("t1", at=NOW + 5))
    assert state.workers["w1@h"].alive_at(NOW + 8)
    state.event(worker_event("worker-offline", at=NOW + 6))
    worker = state.workers["w1@h"]
    assert worker.offline and not worker.alive_at(NOW + 6.5)
    assert worker.lost_since == NOW + 6


def test_lost_workers_are_forgotten_after_a_while_and_live_ones_never() -> None:
    state = State(forget_lost_after=60)
    state.event(worker_event("worker-online", hostname="gone@h"))
    state.event(worker_event("worker-offline", hostname="left@h"))
    state.event(worker_event("worker-heartbeat", hostname="live@h", at=NOW + 1))
    assert state.forget_lost(NOW + 63) == ["left@h"]  # offline at NOW: 63 s ago
    assert state.forget_lost(NOW + 64.5) == ["gone@h"]  # lost at NOW + 4: 60.5 s ago
    state.event(worker_event("worker-heartbeat", hostname="live@h", at=NOW + 64))
    assert state.forget_lost(NOW + 65) == []
    assert list(state.workers) == ["live@h"]


# -- tasks --------------------------------------------------------------------------------------
def test_a_tasks_events_fold_into_its_state_fields_and_history() -> None:
    state = State()
    state.event(received("t1", at=NOW))
    state.event(task_event("task-started", "t1", at=NOW + 1, clock=2))
    state.event(task_event("task-succeeded", "t1", at=NOW + 2, clock=3, result="5", runtime=0.5))
    task = state.tasks["t1"]
    assert task.state == states.SUCCESS and task.ready
    assert (task.name, task.args, task.kwargs, task.result, task.runtime) == (
        "shop.add",
        "(2, 3)",
        "{}",
        "5",
        0.5,
    )
    assert (task.received, task.started, task.succeeded) == (NOW, NOW + 1, NOW + 2)
    assert task.history == [
        ("task-received", NOW),
        ("task-started", NOW + 1),
        ("task-succeeded", NOW + 2),
    ]
    assert task.worker is state.workers["w1@h"]
    assert task.info()["result"] == "5"
    assert task.as_dict()["worker"] == "w1@h"
    assert state.task_count == 1 and state.event_count == 3


def test_a_late_event_adds_its_fields_without_moving_the_task_back() -> None:
    state = State()
    state.event(task_event("task-succeeded", "t1", at=NOW + 2, result="5"))
    state.event(received("t1", at=NOW))  # arrived last (another process sent it)
    task = state.tasks["t1"]
    assert task.state == states.SUCCESS
    assert task.name == "shop.add" and task.args == "(2, 3)"
    assert task.timestamp == NOW + 2


def test_a_retried_task_runs_again_through_its_states() -> None:
    state = State()
    state.event(received("t1"))
    state.event(task_event("task-retried", "t1", exception="Boom()", traceback="tb"))
    assert state.tasks["t1"].state == states.RETRY
    state.event(received("t1", retries=1))
    assert state.tasks["t1"].state == states.RECEIVED and state.tasks["t1"].retries == 1
    state.event(task_event("task-failed", "t1", exception="ValueError('bad')", traceback="tb"))
    task = state.tasks["t1"]
    assert task.state == states.FAILURE and task.exception == "ValueError('bad')"
    assert list(state.recent_failures) == [task]


def test_a_sent_event_names_the_client_not_a_worker() -> None:
    state = State()
    state.event(task_event("task-sent", "t1", hostname="gen1@h", name="shop.add", queue="celery"))
    task = state.tasks["t1"]
    assert task.client == "gen1@h" and task.worker is None and task.state == states.PENDING
    assert "gen1@h" not in state.workers


def test_tasks_are_an_lru_of_bounded_size() -> None:
    state = State(max_tasks_in_memory=3)
    for i in range(5):
        state.event(received(f"t{i}"))
    state.event(task_event("task-started", "t2"))  # touched: kept longest
    state.event(received("t5"))
    assert list(state.tasks) == ["t4", "t2", "t5"]
    assert [uuid for uuid, _ in state.tasks_by_time()] == ["t5", "t2", "t4"]
    assert state.task_count == 6


def test_counts_and_rates_per_task_type() -> None:
    state = State()
    for i in range(4):
        state.event(received(f"a{i}", name="shop.add", at=NOW + i))
        state.event(task_event("task-succeeded", f"a{i}", at=NOW + i, result="1"))
    state.event(received("b", name="shop.pay", at=NOW + 3))
    state.event(task_event("task-failed", "b", at=NOW + 3, exception="E()"))
    assert state.counts["shop.add"]["task-succeeded"] == 4
    assert state.counts["shop.pay"] == {"task-received": 1, "task-failed": 1}
    assert state.task_types() == ["shop.add", "shop.pay"]
    assert state.rates.rate("shop.add succeeded", NOW + 3.5) == pytest.approx(4 / 3.5)
    assert state.workers["w1@h"].counts["task-succeeded"] == 4
    assert [u for u, _ in state.tasks_by_type("shop.pay")] == ["b"]
    assert len(list(state.tasks_by_worker("w1@h"))) == 5


def test_other_groups_and_malformed_events_are_counted_and_ignored() -> None:
    state = State()
    assert state.event({"type": "custom-thing", "hostname": "x"}) == (None, "thing")
    assert state.event({"type": "task-started"}) == (None, "started")  # no uuid
    assert state.event_count == 2 and not state.tasks


def test_a_rate_meter_forgets_what_is_older_than_its_window() -> None:
    meter = RateMeter(window=10)
    for second in range(20):
        meter.add("k", NOW + second, count=2)
    assert meter.rate("k", NOW + 19.5) == pytest.approx(2.0)
    assert meter.rates(NOW + 40) == {}


def test_the_receiver_wakes_the_workers_once_it_listens_and_survives_a_failed_wakeup() -> None:
    transport = memory_app("wake").create_transport()
    listening: list[int] = []

    async def wakeup() -> None:
        listening.append(transport.transient_listeners("celeryev"))  # type: ignore[attr-defined]

    async def failing() -> None:
        raise ConnectionError("no control exchange")

    async def main() -> None:
        async with EventReceiver(transport, wakeup=wakeup):
            pass
        async with EventReceiver(transport, wakeup=failing) as receiver:
            assert await receiver.next(0.01) is None

    asyncio.run(main())
    assert listening == [1]  # called once, with the listener already open
