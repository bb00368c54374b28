"""Every key a Redis fleet leaves behind expires (issue 19): after tasks, failures, retries,
countdowns, chords, saved groups, revokes and events have all run, no key under the fleet's
prefix lives for ever, so Redis' memory does not grow with the number of tasks ever run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from apps.expiry_tasks import PREFIX_ENV, URL_ENV, build_app
from worker_harness import WorkerProcess, child_env, start_cli_worker

from celeriac import Celeriac, chord, group
from conftest import delete_redis_keys, require_service

URL = "redis://127.0.0.1:6379/13"
WAIT = 30.0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Celeriac, WorkerProcess, str]]:
    require_service("Redis", 6379)
    prefix = f"itest-exp-{uuid.uuid4().hex[:8]}:"
    app = build_app(URL, prefix)
    env = child_env({URL_ENV: URL, PREFIX_ENV: prefix})
    worker = start_cli_worker("apps.expiry_tasks", env, tmp_path, "-E", "-Q", f"{prefix}q")
    try:
        yield app, worker, prefix
    finally:
        worker.stop()
        app.close()
        delete_redis_keys(URL, prefix)


def run_every_kind_of_work(app: Celeriac) -> set[str]:
    """Tasks, a countdown, a failure, a retry, a chord, a saved group, revokes: their ids."""
    add, total = app.tasks["x.add"], app.tasks["x.total"]
    ids: set[str] = set()
    done = add.delay(1, 2)
    assert done.get(timeout=WAIT) == 3
    counted = add.apply_async((2, 2), countdown=1)
    assert counted.get(timeout=WAIT) == 4
    failed = app.send_task("x.boom")
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=WAIT)
    retried = app.send_task("x.retry_once")
    assert retried.get(timeout=WAIT) == "again"
    joined = chord(add.s(i, i) for i in range(5))(total.s())
    assert joined.get(timeout=WAIT) == 20
    saved = group(add.s(i, 1) for i in range(3)).apply_async()
    saved.save()
    assert saved.get(timeout=WAIT) == [1, 2, 3]
    revoked = str(uuid.uuid4())
    app.control.revoke(revoked)
    ids |= {done.id, counted.id, failed.id, retried.id, joined.id, saved.id, revoked}
    ids |= {child.id for child in saved.results}
    return ids


def test_no_key_left_per_task_lives_for_ever(fleet: tuple[Celeriac, WorkerProcess, str]) -> None:
    """Keys without a TTL are the fleet's fixed bookkeeping (declared topology, a queue's
    structures, one sequence, the revokes stream trimmed by worker_revoke_expires): a second
    round of the same work adds none, and none is named after a task or a group."""
    app, _, prefix = fleet
    client = redis.Redis.from_url(URL)
    try:

        def forever() -> set[str]:
            return {
                key.decode()
                for key in client.scan_iter(match=f"{prefix}*", count=1000)
                if client.ttl(key) == -1
            }

        first_ids = run_every_kind_of_work(app)
        first = forever()
        second_ids = run_every_kind_of_work(app)
        second = forever()
        assert second <= first | {k for k in second if k.endswith(":revokes")}, second - first
        named = [k for k in second for i in first_ids | second_ids if i in k]
        assert not named, named
    finally:
        client.close()
