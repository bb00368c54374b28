"""The dashboard against a real worker process (threads pool, ``-E``) on a SQLite broker, driven
with Starlette's TestClient: every page, every action through the control channel or the
broker, the audit log, the read-only role refused, CSRF and origin checks, the live stream and
the Prometheus endpoint parsed with prometheus-client's own parser.

One worker and one dashboard serve the whole module (starting them is most of the cost); each
test sends tasks of its own and looks only at them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from dashboard_support import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    Harness,
    csrf_of,
    login,
    serve,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from worker_harness import WorkerProcess

from celeriac import chain
from celeriac.dashboard import queries
from celeriac.dashboard.runtime import Dashboard
from celeriac.transports.base import DeadLetter

WORKER = "w1@dash"
PARKED = "parked"
WAIT = 20.0
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Cluster:
    harness: Harness
    worker: WorkerProcess
    dashboard: Dashboard
    operator: TestClient
    viewer: TestClient

    def task_row(self, task_id: str, state: str | None = None) -> dict[str, Any]:
        """The task's history row once it is there (and in ``state``, when given)."""
        found: dict[str, Any] = {}

        def there() -> bool:
            self.dashboard.ingest.drain()
            row = queries.task(self.dashboard.store, task_id)
            if row is None or (state is not None and row["state"] != state):
                return False
            found.update(row)
            return True

        wait_until(there, WAIT, f"task {task_id} in the history as {state or 'anything'}")
        return found

    def csrf(self, client: TestClient) -> str:
        return csrf_of(client.get("/audit").text)

    def act(self, path: str, **form: str) -> Any:
        """POST an action as the operator, follow it back, return the page."""
        response = self.operator.post(path, data={"csrf": self.csrf(self.operator), **form})
        assert response.status_code == 200, response.text
        return response


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("dashboard")
    harness = Harness(tmp)
    try:
        worker = harness.start_worker("-E", name=WORKER)
        with serve(harness.app, tmp / "history.db", queues=(PARKED,)) as (dashboard, operator):
            viewer = TestClient(operator.app, base_url=str(operator.base_url))
            login(operator, OPERATOR_TOKEN)
            login(viewer, VIEWER_TOKEN)
            yield Cluster(harness, worker, dashboard, operator, viewer)
    finally:
        harness.close()


# -- pages ------------------------------------------------------------------------------------
def test_the_live_worker_is_listed_with_pool_concurrency_and_queues(cluster: Cluster) -> None:
    wait_until(lambda: WORKER in cluster.dashboard.cluster.workers, WAIT, "the worker's details")
    page = cluster.operator.get("/workers").text
    row = page[page.index(f'data-hostname="{WORKER}"') :].split("</tr>", 1)[0]
    assert "threads" in row
    assert "<td>2</td>" in row  # concurrency
    assert "celery" in row
    assert "s ago" in row  # its last heartbeat


def test_tasks_are_searched_and_shown_with_args_result_traceback_and_timeline(
    cluster: Cluster,
) -> None:
    app = cluster.harness.app
    marker = uuid.uuid4().hex[:8]
    good = app.send_task("t.add", (40, 2), kwargs={}, headers={"marker": marker})
    bad = app.send_task("t.fail_value", (int(marker, 16) % 1000,))
    cluster.task_row(good.id, "SUCCESS")
    cluster.task_row(bad.id, "FAILURE")

    by_state = cluster.operator.get("/tasks", params={"state": "FAILURE", "name": "fail_value"})
    assert bad.id in by_state.text and good.id not in by_state.text
    by_args = cluster.operator.get("/tasks", params={"args": "(40, 2)"})
    assert good.id in by_args.text
    by_id = cluster.operator.get("/tasks", params={"id": bad.id[:13]})
    assert bad.id in by_id.text
    by_worker = cluster.operator.get("/tasks", params={"worker": WORKER, "name": "t.add"})
    assert good.id in by_worker.text
    in_the_future = cluster.operator.get("/tasks", params={"since": "2999-01-01"})
    assert 'id="no-tasks"' in in_the_future.text

    detail = cluster.operator.get(f"/tasks/{bad.id}").text
    assert "ValueError" in detail and "Traceback" in detail
    assert f"({int(marker, 16) % 1000},)" in detail
    for event in ("task-received", "task-started", "task-failed"):
        assert event in detail
    assert "42" in cluster.operator.get(f"/tasks/{good.id}").text
    assert cluster.operator.get(f"/tasks/{uuid.uuid4()}").status_code == 404


def test_search_is_paginated(cluster: Cluster) -> None:
    app = cluster.harness.app
    ids = [app.send_task("t.add", (i, 1000)).id for i in range(queries.PAGE_SIZE + 3)]
    for task_id in ids:
        cluster.task_row(task_id, "SUCCESS")
    first = cluster.operator.get("/tasks", params={"args": ", 1000)"}).text
    second = cluster.operator.get("/tasks", params={"args": ", 1000)", "page": "2"}).text
    on_first = [i for i in ids if i in first]
    on_second = [i for i in ids if i in second]
    assert len(on_first) == queries.PAGE_SIZE and len(on_second) == 3
    assert not set(on_first) & set(on_second)
    assert 'rel="next"' in first and 'rel="prev"' in second


def test_a_workflow_shows_its_tree_of_parent_and_children(cluster: Cluster) -> None:
    app = cluster.harness.app
    add = app.signature("t.add", (1, 2))
    result = chain(add, app.signature("t.add", (10,)), app.signature("t.add", (100,))).apply_async()
    last = cluster.task_row(result.id, "SUCCESS")
    root = str(last["root_id"])
    page = cluster.operator.get(f"/tasks/{root}").text
    tree = page[page.index('id="workflow"') :]
    assert tree.count("<li>") == 3
    assert tree.index(root[:8]) < tree.index(result.id[:8])
    assert tree.count("<ul>") == 2  # root -> child -> grandchild


def test_overview_and_queues_show_rates_latency_workers_and_depths(cluster: Cluster) -> None:
    app = cluster.harness.app
    cluster.task_row(app.send_task("t.add", (1, 1)).id, "SUCCESS")
    wait_until(lambda: PARKED in cluster.dashboard.cluster.queues, WAIT, "the parked queue")
    page = cluster.operator.get("/").text
    assert "<svg" in page and "<rect" in page  # the per-minute throughput chart has bars
    assert WORKER in page
    assert "celery" in page
    queues = cluster.operator.get("/queues").text
    assert f'data-queue="{PARKED}"' in queues


# -- actions ----------------------------------------------------------------------------------
def test_a_failed_task_is_retried_with_its_name_and_arguments(cluster: Cluster) -> None:
    app = cluster.harness.app
    failed = app.send_task("t.fail_value", (7,))
    cluster.task_row(failed.id, "FAILURE")
    page = cluster.act(f"/tasks/{failed.id}/retry")
    link = re.search(r'id="flash-task">([0-9a-f-]{36})<', page.text)
    assert link is not None, page.text
    new_id = link.group(1)
    assert new_id != failed.id
    again = cluster.task_row(new_id, "FAILURE")
    assert again["name"] == "t.fail_value" and again["args"] == "(7,)"
    assert "sent again as" in page.text
    audit = cluster.operator.get("/audit").text
    assert "retry" in audit and failed.id in audit and "operator@" in audit


def test_revoke_and_terminate_go_through_the_control_channel(cluster: Cluster) -> None:
    harness = cluster.harness
    runs, release = harness.dir / f"runs-{uuid.uuid4().hex}", harness.dir / "release-revoke"
    runs.mkdir()
    blocked = harness.app.send_task("t.block", (str(runs), str(release)))
    try:
        cluster.task_row(blocked.id, "STARTED")
        revoked = cluster.act(f"/tasks/{blocked.id}/revoke").text
        assert f"{WORKER}: tasks" in revoked and "flagged as revoked" in revoked
        refused = cluster.act(f"/tasks/{blocked.id}/revoke", terminate="1", signal="SIGKILL")
        assert "cannot stop a task running in a thread" in refused.text  # the worker's answer
    finally:
        release.touch()
    log = cluster.operator.get("/audit").text
    assert "revoke" in log and "terminate" in log


def test_rate_limit_and_pool_size_reach_the_worker(cluster: Cluster) -> None:
    limited = cluster.act("/rate-limit", task="t.add", rate="100/m").text
    assert f"ok: {WORKER}:" in limited
    grown = cluster.act("/workers/pool", hostname=WORKER, change="grow", n="1").text
    assert f"ok: {WORKER}:" in grown
    wait_until(
        lambda: (
            cluster.harness.app.control.inspect([WORKER]).stats()[WORKER]["pool"]["max-concurrency"]
            == 3
        ),
        WAIT,
        "the pool grown to 3",
    )
    shrunk = cluster.act("/workers/pool", hostname=WORKER, change="shrink", n="1").text
    assert f"ok: {WORKER}:" in shrunk
    cluster.act("/rate-limit", task="t.add", rate="")


def test_a_queue_is_purged(cluster: Cluster) -> None:
    app = cluster.harness.app
    for i in range(3):
        app.send_task("t.add", (i, i), queue=PARKED)
    assert cluster.harness.queue_size(PARKED) == 3
    page = cluster.act("/queues/purge", queue=PARKED).text
    assert "3 messages removed" in page
    assert cluster.harness.queue_size(PARKED) == 0


def test_dead_letters_are_grouped_requeued_and_deleted(cluster: Cluster) -> None:
    harness = cluster.harness
    sent = harness.app.send_task("t.nope", (1,))

    def letters() -> list[DeadLetter]:
        return [letter for letter in harness.dead_letters() if sent.id in letter.reason]

    wait_until(lambda: len(letters()) == 1, WAIT, "the dead letter")
    first = letters()[0]
    page = cluster.operator.get("/dead-letters", params={"queue": "celery"}).text
    assert sent.id in page and 'id="reason-groups"' in page
    fingerprint = re.search(r'value="([0-9a-f]{20})"[^>]*>\s*</td>\s*<td>t.nope', page)
    assert fingerprint is not None, page

    requeued = cluster.act(
        "/dead-letters", queue="celery", action="requeue", selected=fingerprint.group(1)
    ).text
    assert "1 dead letter requeued" in requeued
    # the message went back to its queue: the worker takes it and dead-letters it again
    wait_until(
        lambda: any(letter.failed_at > first.failed_at for letter in letters()),
        WAIT,
        "the requeued message dead-lettered again",
    )
    assert first not in letters()  # deleted on the broker (SQLite can), not only hidden
    page = cluster.operator.get("/dead-letters", params={"queue": "celery", "q": sent.id}).text
    shown = f'<td class="mono">{sent.id}</td>'
    assert fingerprint.group(1) not in page and page.count(shown) == 1

    deleted = cluster.act(
        "/dead-letters", queue="celery", action="delete", scope="matching", q=sent.id
    ).text
    assert "1 dead letter deleted" in deleted and "hidden here" not in deleted
    assert letters() == []
    page = cluster.operator.get("/dead-letters", params={"queue": "celery", "q": sent.id}).text
    assert shown not in page


def test_beat_entries_are_paused_resumed_and_run_now(cluster: Cluster) -> None:
    app = cluster.harness.app
    name = f"tick-{uuid.uuid4().hex[:6]}"
    app.beat.add(name, "t.add", 3600, args=(20, 22))
    page = cluster.operator.get("/beat").text
    assert f'data-entry="{name}"' in page
    paused = cluster.act(f"/beat/{name}/pause").text
    row = paused[paused.index(f'data-entry="{name}"') :].split("</tr>", 1)[0]
    assert "paused" in row and "Resume" in row
    resumed = cluster.act(f"/beat/{name}/resume").text
    assert "active" in resumed[resumed.index(f'data-entry="{name}"') :].split("</tr>", 1)[0]
    ran = cluster.act(f"/beat/{name}/run_now").text
    sent = re.search(r"sent as ([0-9a-f-]{36})", ran)
    assert sent is not None, ran
    assert cluster.task_row(sent.group(1), "SUCCESS")["result"] == "42"


# -- who may act ------------------------------------------------------------------------------
ACTIONS = [
    ("/tasks/00000000-0000-0000-0000-000000000000/retry", {}),
    ("/tasks/00000000-0000-0000-0000-000000000000/revoke", {}),
    ("/rate-limit", {"task": "t.add", "rate": "1/m"}),
    ("/workers/pool", {"hostname": WORKER, "change": "grow"}),
    ("/queues/purge", {"queue": PARKED}),
    ("/dead-letters", {"queue": "celery", "action": "delete", "scope": "matching"}),
    ("/beat/x/pause", {}),
]


@pytest.mark.parametrize(("path", "form"), ACTIONS)
def test_the_read_only_role_is_refused_every_action(
    cluster: Cluster, path: str, form: dict[str, str]
) -> None:
    entries = len(cluster.dashboard.store.audit_log(1000))
    response = cluster.viewer.post(path, data={"csrf": cluster.csrf(cluster.viewer), **form})
    assert response.status_code == 403
    assert "read-only" in response.text
    assert len(cluster.dashboard.store.audit_log(1000)) == entries


def test_the_viewer_sees_pages_without_action_forms(cluster: Cluster) -> None:
    failed = cluster.harness.app.send_task("t.fail_value", (1,))
    cluster.task_row(failed.id, "FAILURE")
    page = cluster.viewer.get(f"/tasks/{failed.id}").text
    assert "ValueError" in page and 'id="retry-form"' not in page
    assert "Purge" not in cluster.viewer.get("/queues").text


@pytest.mark.parametrize(("path", "form"), ACTIONS)
def test_every_action_needs_the_csrf_token(
    cluster: Cluster, path: str, form: dict[str, str]
) -> None:
    missing = cluster.operator.post(path, data=form)
    wrong = cluster.operator.post(path, data={**form, "csrf": "x" * 43})
    assert missing.status_code == wrong.status_code == 403
    assert "CSRF" in missing.text


def test_a_cross_site_post_is_refused_even_with_the_token(cluster: Cluster) -> None:
    response = cluster.operator.post(
        "/queues/purge",
        data={"csrf": cluster.csrf(cluster.operator), "queue": PARKED},
        headers={"origin": "https://evil.example"},
    )
    assert response.status_code == 403


# -- live and metrics -------------------------------------------------------------------------
def test_the_live_stream_sends_the_worker_list(cluster: Cluster) -> None:
    with cluster.operator.stream("GET", "/live", params={"view": "workers"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                fragment = orjson.loads(line[6:])
                break
    assert fragment["id"] == "live-workers"
    assert f'data-hostname="{WORKER}"' in fragment["html"]
    assert cluster.operator.get("/live", params={"view": "nope"}).status_code == 404


def test_metrics_carry_celery_exporter_names_with_bounded_labels(cluster: Cluster) -> None:
    app = cluster.harness.app
    cluster.task_row(app.send_task("t.add", (2, 2)).id, "SUCCESS")
    cluster.task_row(app.send_task("t.fail_value", (3,)).id, "FAILURE")
    wait_until(lambda: "celery" in cluster.dashboard.cluster.queues, WAIT, "queue depths")
    text = cluster.operator.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "celery_task_received", "celery_task_started", "celery_task_succeeded",
        "celery_task_failed", "celery_task_runtime", "celery_task_wait_seconds",
        "celery_worker_up", "celery_worker_tasks_active", "celery_queue_length",
        "celery_active_consumer_count",
    ):  # fmt: skip
        assert name in families, sorted(families)
    succeeded = {
        (s.labels["name"], s.labels["hostname"], s.labels["queue_name"]): s.value
        for s in families["celery_task_succeeded"].samples
        if s.name.endswith("_total")
    }
    assert succeeded[("t.add", WORKER, "celery")] >= 1
    failed = [s for s in families["celery_task_failed"].samples if s.name.endswith("_total")]
    assert any(s.labels["exception"] == "ValueError" for s in failed)
    up = {s.labels["hostname"]: s.value for s in families["celery_worker_up"].samples}
    assert up[WORKER] == 1
    lengths = {s.labels["queue_name"] for s in families["celery_queue_length"].samples}
    assert {"celery", PARKED} <= lengths
    for family in families.values():
        for sample in family.samples:
            assert not any(UUID.search(v) for v in sample.labels.values()), sample
    assert cluster.viewer.get("/metrics").status_code == 200


def test_history_survives_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    failed = cluster.harness.app.send_task("t.fail_value", (99,))
    cluster.task_row(failed.id, "FAILURE")
    # a second dashboard on the same history file, as after a restart (the first one drained)
    with serve(cluster.harness.app, cluster.dashboard.config.db) as (_, client):
        login(client, VIEWER_TOKEN)
        page = client.get(f"/tasks/{failed.id}")
        assert page.status_code == 200
        assert "bad value 99" in page.text
        assert failed.id in client.get("/tasks", params={"state": "FAILURE"}).text
