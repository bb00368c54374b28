"""What a prefork child that fetches its own messages runs itself, and what it hands to the
worker (``worker/pools/fetching.py``): every reason, on real messages, and the plain case."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.protocol.message import task_message
from celeriac.transports.base import Delivery
from celeriac.worker.pools.board import Board
from celeriac.worker.pools.fetching import Fetching, FetchPlan, HandOver, Queues, Revoke

BODY = b"[[2, 3], {}, {}]"


class NoFetcher:
    """``_prepare`` never fetches; the child's loop is tested on a real Redis elsewhere."""

    client_id = None


@pytest.fixture
def fetching() -> Any:
    app = Celeriac("fetching-test", broker="memory://", backend="memory://")

    @app.task(name="f.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="f.limited", rate_limit="1/s", time_limit=5, soft_time_limit=2)
    def limited() -> None:
        return None

    board = Board(1)
    plan = FetchPlan(os.dup(board.shared().fd), 0, ("celery",), frozenset(), frozenset(), 9.0, 3.0)
    sent: list[Any] = []
    child = Fetching(app, plan, NoFetcher(), "w@h", sent.append)  # type: ignore[arg-type]
    child.sent = sent  # type: ignore[attr-defined]
    yield child
    child.writer.close()
    board.close()
    app.close()


def delivery(task: str = "f.add", task_id: str = "id-1", **headers: Any) -> Delivery:
    message = task_message(
        task=task,
        task_id=task_id,
        body=BODY,
        content_type="application/json",
        content_encoding="utf-8",
        **headers,
    )
    return Delivery(("1", 1), "celery", message.to_wire())


def why(fetching: Any, d: Delivery) -> str | None:
    prepared = fetching._prepare(d)
    return prepared if isinstance(prepared, str) else None


def test_a_plain_message_runs_in_the_child_with_the_worker_limits(fetching: Any) -> None:
    prepared = fetching._prepare(delivery())
    assert not isinstance(prepared, str)
    task, request, hard, soft = prepared
    assert (task.name, list(request.args), hard, soft) == ("f.add", [2, 3], 9.0, 3.0)
    _, _, hard, soft = fetching._prepare(delivery("f.limited"))  # handed over below, not here
    assert (hard, soft) == (5.0, 2.0)  # the task's own limits win over the worker's


def test_what_needs_the_worker_is_handed_over_with_why(fetching: Any) -> None:
    now = datetime.now(UTC)
    assert why(fetching, delivery("f.nope")) == "unknown task"
    assert why(fetching, delivery(retries=1)) == "a retry"
    assert why(fetching, delivery(expires=now - timedelta(seconds=1))) == "expired"
    assert why(fetching, delivery(eta=now + timedelta(seconds=60))) == "due later"
    assert why(fetching, delivery(eta=now - timedelta(seconds=1))) is None  # due: runs here
    bad = Delivery(("1", 1), "celery", b"not a message")
    assert (why(fetching, bad) or "").startswith("unreadable")


def test_revokes_rate_limits_task_events_and_queues_come_from_the_worker(fetching: Any) -> None:
    assert fetching.heard(Revoke(frozenset({"id-1", ("root_id", "root-9")})))
    assert why(fetching, delivery(task_id="id-1")) == "revoked"
    assert why(fetching, delivery(task_id="id-2", root_id="root-9")) == "revoked"
    assert why(fetching, delivery(task_id="id-3")) is None
    assert fetching.heard(Revoke(frozenset({("parent_id", "p-1")})))
    assert why(fetching, delivery(task_id="id-4", parent_id="p-1")) == "revoked"
    assert fetching.heard(HandOver(frozenset({"f.limited"})))
    assert why(fetching, delivery("f.limited", task_id="id-5")) == "rate limited"
    assert why(fetching, delivery(task_id="id-6")) is None
    assert fetching.heard(HandOver(frozenset(), everything=True))  # task events are on
    assert why(fetching, delivery(task_id="id-7")) == "the worker sends task events"
    assert fetching.heard(Queues(("a", "b")))
    assert fetching.queues == ["a", "b"]
    assert not fetching.heard("something else")


def test_a_task_too_large_for_the_board_is_handed_over(fetching: Any) -> None:
    big = task_message(
        task="f.add",
        task_id="big",
        body=b"[[" + b"1, " * 100_000 + b"1], {}, {}]",  # past a slot's 256 KiB
        content_type="application/json",
        content_encoding="utf-8",
    )
    fetching.run(Delivery(("1", 1), "celery", big.to_wire()), slot=None)
    [handoff] = fetching.send.__self__  # the list the child "sent" to
    assert (handoff.why, handoff.queue, handoff.tag) == (
        "too large for the board",
        "celery",
        ("1", 1),
    )
    assert fetching.totals == {"f.add": 0}
