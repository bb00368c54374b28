"""The history file and the metrics, fed events as the receiver yields them (no broker needed):
what survives a restart, what merges, retention by count and age, bounded memory, bounded and
expiring metric labels."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from celeriac.dashboard import queries
from celeriac.dashboard.ingest import Ingest
from celeriac.dashboard.metrics import OTHER, Metrics
from celeriac.dashboard.store import HistoryStore

WORKER = "celery@w1"


def event(type_: str, at: float | None = None, **fields: Any) -> dict[str, Any]:
    now = time.time() if at is None else at
    return {
        "hostname": WORKER, "utcoffset": 0, "pid": 1, "clock": 1, "timestamp": now,
        "local_received": now, "type": type_, **fields,
    }  # fmt: skip


def run_task(ingest: Ingest, name: str, ok: bool = True, at: float | None = None) -> str:
    task_id = str(uuid.uuid4())
    ingest.fold(event("task-received", at, uuid=task_id, name=name, args="(1, 'a')", kwargs="{}"))
    ingest.fold(event("task-started", at, uuid=task_id))
    if ok:
        ingest.fold(event("task-succeeded", at, uuid=task_id, result="'done'", runtime=0.5))
    else:
        ingest.fold(
            event("task-failed", at, uuid=task_id, exception="KeyError('x')", traceback="TB")
        )
    return task_id


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.db"


@pytest.fixture
def ingest(db: Path) -> Iterator[Ingest]:
    store = HistoryStore(db, max_tasks=100).open()
    found = Ingest(store, Metrics(), queue_of=lambda name: "celery", max_tasks_in_memory=10)
    yield found
    found.close()
    store.close()


def test_failures_survive_a_restart(db: Path, ingest: Ingest) -> None:
    failed = run_task(ingest, "shop.pay", ok=False)
    fine = run_task(ingest, "shop.pay")
    ingest.close()
    ingest.store.close()

    reopened = HistoryStore(db).open()
    try:
        row = queries.task(reopened, failed)
        assert row is not None
        assert (row["state"], row["name"], row["exception"]) == (
            "FAILURE",
            "shop.pay",
            "KeyError('x')",
        )
        assert row["traceback"] == "TB" and row["worker"] == WORKER and row["queue"] == "celery"
        found = queries.search(reopened, queries.TaskFilter(state="FAILURE"))
        assert [r["id"] for r in found.rows] == [failed]
        timeline = [e["type"] for e in queries.timeline(reopened, failed)]
        assert timeline == ["task-received", "task-started", "task-failed"]
        minute = queries.totals(reopened, time.time() - 120)
        assert minute["failed"] == 1 and minute["succeeded"] == 1
        assert queries.task(reopened, fine)["runtime"] == 0.5  # type: ignore[index]
    finally:
        reopened.close()


def test_a_task_finished_after_a_restart_keeps_what_was_stored(db: Path, ingest: Ingest) -> None:
    task_id = str(uuid.uuid4())
    ingest.fold(event("task-received", uuid=task_id, name="shop.ship", args="(3,)", kwargs="{}"))
    ingest.drain()
    # a new dashboard knows nothing of the task: its state starts empty
    later = Ingest(ingest.store, Metrics())
    later.fold(event("task-succeeded", uuid=task_id, result="3", runtime=0.1))
    later.close()
    row = queries.task(ingest.store, task_id)
    assert row is not None
    assert (row["state"], row["name"], row["args"], row["result"]) == (
        "SUCCESS", "shop.ship", "(3,)", "3",
    )  # fmt: skip


def test_retention_by_count_keeps_the_newest(ingest: Ingest) -> None:
    start = time.time() - 1000
    ids = [run_task(ingest, "shop.count", at=start + i) for i in range(150)]
    ingest.drain()  # the writer prunes after its first batch, then once a minute
    ingest.store.prune()
    kept = {r[0] for r in ingest.store.query("SELECT id FROM tasks")}
    assert kept == set(ids[50:])
    assert queries.timeline(ingest.store, ids[0]) == []
    assert len(queries.timeline(ingest.store, ids[-1])) == 3


def test_retention_by_age(db: Path) -> None:
    store = HistoryStore(db, max_age=3600).open()
    ingest = Ingest(store, Metrics())
    try:
        old = run_task(ingest, "shop.old", at=time.time() - 7200)
        new = run_task(ingest, "shop.new")
        ingest.drain()
        store.prune()
        assert queries.task(store, old) is None
        assert queries.task(store, new) is not None
        assert queries.series(store, 180)[-1].counts["succeeded"] == 1
    finally:
        ingest.close()
        store.close()


def test_memory_holds_a_bounded_number_of_tasks(ingest: Ingest) -> None:
    for _ in range(200):
        run_task(ingest, "shop.many")
    assert len(ingest.state.tasks) == 10
    ingest.drain()
    assert ingest.store.query("SELECT count(*) FROM tasks")[0][0] == 100  # max_tasks


def test_a_workflow_tree_from_parent_ids(ingest: Ingest) -> None:
    root, child, grandchild, sibling = (str(uuid.uuid4()) for _ in range(4))
    for task_id, parent in ((root, None), (child, root), (grandchild, child), (sibling, root)):
        ingest.fold(event("task-received", uuid=task_id, name="wf", root_id=root, parent_id=parent))
    ingest.drain()
    row = queries.task(ingest.store, grandchild)
    assert row is not None
    tree = queries.workflow(ingest.store, row)
    assert tree is not None and tree.id == root
    assert sorted(c.id for c in tree.children) == sorted([child, sibling])
    assert [c.id for c in next(c for c in tree.children if c.id == child).children] == [grandchild]


# -- metrics ----------------------------------------------------------------------------------
def samples(metrics: Metrics, family: str) -> list[Any]:
    for found in text_string_to_metric_families(metrics.render().decode()):
        if found.name == family:
            return list(found.samples)
    return []


def test_a_lost_worker_goes_down_then_its_series_are_removed() -> None:
    metrics = Metrics()
    store = HistoryStore(":memory:")
    ingest = Ingest(store.open(), metrics, forget_lost_after=60)
    try:
        beat = time.time() - 30
        ingest.fold(event("worker-heartbeat", at=beat, freq=2.0, active=1))
        run_task(ingest, "shop.x", at=beat)
        up = samples(metrics, "celery_worker_up")
        assert [(s.labels["hostname"], s.value) for s in up] == [(WORKER, 1.0)]
        ingest.sweep(beat + 10)  # silent for longer than twice its frequency: lost
        assert [s.value for s in samples(metrics, "celery_worker_up")] == [0.0]
        ingest.sweep(beat + 100)  # lost for longer than forget_lost_after: forgotten
        for family in ("celery_worker_up", "celery_task_succeeded", "celery_task_runtime"):
            assert not [s for s in samples(metrics, family) if s.labels.get("hostname") == WORKER]
    finally:
        ingest.close()


def test_label_values_are_bounded() -> None:
    metrics = Metrics(max_names=3)
    for i in range(6):
        metrics.task_event("succeeded", f"task.{i}", WORKER, "celery", runtime=0.1)
    metrics.task_event("sent", "task.0", "gen123@client-host", "celery")
    names = {s.labels["name"] for s in samples(metrics, "celery_task_succeeded")}
    assert names == {"task.0", "task.1", "task.2", OTHER}
    sent = samples(metrics, "celery_task_sent")
    assert {s.labels["hostname"] for s in sent} == {"generic"}
