"""Issue 16, point 3: Flower 2, started as Celery users start it, sees celeriac workers.

It lists the celeriac worker (``/api/workers`` from remote control, with every ``stats`` key it
reads; ``/workers`` from its heartbeats), renders its page, shows its tasks live with their
states, results and tracebacks (``/api/tasks``, ``/api/task/info/<id>``, from task events), and
revokes one (``/api/task/revoke/<id>``), which the celeriac worker honours. The Celery worker of
the same fleet shows beside it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from worker_harness import wait_until

from interop.conftest import require_package
from interop.fleet import Fleet
from interop.flower import STATS_KEYS, Flower
from interop.runs import runs_of

pytestmark = [pytest.mark.amqp, pytest.mark.redis]

WAIT = 20.0


@pytest.fixture(scope="module")
def flower(request: pytest.FixtureRequest) -> Iterator[Flower]:
    require_package("flower")  # before the fleet starts for nothing
    fleet: Fleet = request.getfixturevalue("fleet")
    made = Flower(fleet)
    try:
        made.wait_ready()
        yield made
    finally:
        made.close()


def task_info(flower: Flower, task_id: str) -> dict[str, Any] | None:
    """Flower's record of a task, or None while it has heard nothing of it."""
    status, _ = flower.request("GET", f"/api/task/info/{task_id}")
    if status == 404:
        return None
    info: dict[str, Any] = flower.json(f"/api/task/info/{task_id}")
    return info


def wait_state(flower: Flower, task_id: str, state: str) -> dict[str, Any]:
    """Until Flower shows ``task_id`` in ``state``; its record then."""
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        info = task_info(flower, task_id)
        if info is not None:
            seen[:] = [info]
        return info is not None and info["state"] == state

    try:
        wait_until(reached, WAIT, f"Flower to show {task_id} {state}", interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}\n{flower.process.output()}") from None
    return seen[0]


def test_flower_lists_the_celeriac_worker_and_renders_its_page(
    fleet: Fleet, flower: Flower
) -> None:
    node, celery_node = fleet.names.celeriac_node, fleet.names.celery_node

    def alive() -> bool:
        listed = flower.json("/workers?json=1")["data"]
        status = {w["hostname"]: w["status"] for w in listed}
        return status.get(node) is True and status.get(celery_node) is True

    wait_until(alive, WAIT, "Flower to list both workers alive", interval=0.1)

    workers = flower.json("/api/workers?refresh=1")
    assert {node, celery_node} <= set(workers)
    ours = workers[node]
    assert set(ours["stats"]) >= STATS_KEYS, STATS_KEYS - set(ours["stats"])
    assert ours["registered"] == sorted(n for n in fleet.celeriac.tasks if n.startswith("fleet."))
    queues = {q["name"] for q in ours["active_queues"]}
    assert queues == {fleet.names.celeriac_queue, fleet.names.mixed_queue}
    assert isinstance(ours["conf"], dict)
    assert flower.json("/api/workers?status=1")[node] is True

    status, page = flower.request("GET", f"/worker/{node}")
    assert status == 200, page[:2000]
    assert node.encode() in page and b"fleet.describe" in page


def test_flower_shows_tasks_live_with_states_results_and_tracebacks(
    fleet: Fleet, flower: Flower
) -> None:
    node = fleet.names.celeriac_node
    tasks = fleet.celery.tasks
    queue = fleet.names.celeriac_queue
    release = fleet.root / f"release-{uuid.uuid4().hex}"
    running = tasks["fleet.block"].apply_async((str(release),), queue=queue)
    try:
        live = wait_state(flower, running.id, "STARTED")
        assert (live["worker"], live["name"]) == (node, "fleet.block")
        assert live["received"] and live["started"]
    finally:
        release.touch()
    done = wait_state(flower, running.id, "SUCCESS")
    assert done["result"] == "'celeriac'" and done["runtime"] > 0

    ok = tasks["fleet.add"].apply_async((2, 3), queue=queue)
    bad = tasks["fleet.fail"].apply_async(("bad",), queue=queue)
    succeeded = wait_state(flower, ok.id, "SUCCESS")
    assert (succeeded["result"], succeeded["args"], succeeded["worker"]) == ("5", "(2, 3)", node)
    failed = wait_state(flower, bad.id, "FAILURE")
    assert failed["exception"] == "ValueError('bad', 42)"
    assert "ValueError" in failed["traceback"] and "Traceback" in failed["traceback"]

    listed = flower.json(f"/api/tasks?workername={node}")
    assert {listed[t.id]["state"] for t in (running, ok)} == {"SUCCESS"}
    assert listed[bad.id]["state"] == "FAILURE"
    assert all(listed[t.id]["worker"] == node for t in (running, ok, bad))

    # the Celery worker of the same fleet, in the same Flower
    theirs = tasks["fleet.add"].apply_async((1, 1), queue=fleet.names.celery_queue)
    assert wait_state(flower, theirs.id, "SUCCESS")["worker"] == fleet.names.celery_node


#: What Flower shows of a task that must not depend on the kind of worker that ran it.
PARITY = ("name", "state", "args", "kwargs", "result", "exception", "retries")


def test_flower_shows_the_same_for_either_kind_of_worker(fleet: Fleet, flower: Flower) -> None:
    """One success, one failure and one task that retries once then succeeds, on each kind of
    worker: Flower's records agree field for field (the result names its worker, so that word
    is set aside), tracebacks included."""
    sends = {
        "ok": ("fleet.add", (2, 3), "SUCCESS"),
        "bad": ("fleet.fail", ("bad",), "FAILURE"),
        "flaky": ("fleet.flaky", (1,), "SUCCESS"),
    }
    queues = {"celeriac": fleet.names.celeriac_queue, "celery": fleet.names.celery_queue}
    sent = {
        (kind, key): fleet.celery.tasks[name].apply_async(args, queue=queue).id
        for kind, queue in queues.items()
        for key, (name, args, _) in sends.items()
    }
    seen = {
        (kind, key): wait_state(flower, task_id, sends[key][2])
        for (kind, key), task_id in sent.items()
    }

    def shown(kind: str, key: str) -> dict[str, Any]:
        info = seen[kind, key]
        return {f: str(info[f]).replace(kind, "<kind>") for f in PARITY}

    for key in sends:
        assert shown("celeriac", key) == shown("celery", key), key
        assert seen["celeriac", key]["worker"] == fleet.names.celeriac_node
    last_lines = {kind: seen[kind, "bad"]["traceback"].strip().splitlines()[-1] for kind in queues}
    assert last_lines == dict.fromkeys(queues, "ValueError: ('bad', 42)")
    assert seen["celeriac", "flaky"]["exception"] == "None"  # a bare self.retry(), as Celery


def test_flower_revokes_a_task_the_celeriac_worker_holds(fleet: Fleet, flower: Flower) -> None:
    """Both slots busy, a third task is held by the worker (RECEIVED in Flower); Flower's
    revoke reaches the worker, which never runs it: REVOKED in Flower and in Celery's get()."""
    from celery.exceptions import TaskRevokedError  # type: ignore[import-untyped]

    tasks = fleet.celery.tasks
    queue = fleet.names.celeriac_queue
    release = fleet.root / f"release-{uuid.uuid4().hex}"
    blockers = [tasks["fleet.block"].apply_async((str(release),), queue=queue) for _ in range(2)]
    try:
        for blocker in blockers:
            wait_state(flower, blocker.id, "STARTED")
        held = tasks["fleet.describe"].apply_async(("held",), queue=queue)
        wait_state(flower, held.id, "RECEIVED")
        answer = flower.json(f"/api/task/revoke/{held.id}", method="POST")
        assert answer == {"message": f"Revoked '{held.id}'"}

        def told() -> bool:
            revoked = fleet.celery.control.inspect(
                destination=[fleet.names.celeriac_node], timeout=5
            ).revoked()
            return held.id in (revoked or {}).get(fleet.names.celeriac_node, [])

        wait_until(told, WAIT, "the worker to hear the revoke", interval=0.05)
    finally:
        release.touch()
    revoked = wait_state(flower, held.id, "REVOKED")
    assert revoked["worker"] == fleet.names.celeriac_node
    with pytest.raises(TaskRevokedError):
        held.get(timeout=WAIT)
    assert runs_of(fleet.runs, held.id) == []
