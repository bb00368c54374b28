"""The canvas scenario suite: every primitive and nesting, run by a real worker on every backend.

Each scenario runs three times: memory broker and results, SQLite broker and results (files of
the test's own), Redis broker and results (a key prefix of the test's own, on db 14). The worker
is a real one in a thread (threads pool, concurrency 4). The expected values are what Celery 5.7
returns for the same workflow.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.canvas_tasks import GATES, Boom, Tasks, declare, runs

from celeriac import (
    AsyncResult,
    Celeriac,
    ChordError,
    GroupResult,
    Signature,
    TaskRevokedError,
    chain,
    chord,
    group,
    states,
)
from celeriac.canvas.flow import join as flow_join
from celeriac.results.base import ResultMeta
from celeriac.testing import worker_thread
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/14"  # under a key prefix per test (13: the bench)
TIMEOUT = 20.0


def _make_app(kind: str, tmp_path: Path) -> tuple[Celeriac, str]:
    tag = uuid.uuid4().hex[:10]
    if kind == "memory":
        url = f"memory://canvas-{tag}"
        return Celeriac("canvas", broker=url, backend=url), tag
    if kind == "sqlite":
        db = f"sqlite:///{tmp_path / 'canvas.db'}"
        return Celeriac("canvas", broker=db, backend=db), tag
    require_service("Redis", 6379)
    prefix = f"canvas-{tag}:"
    app = Celeriac(
        "canvas",
        broker=REDIS_URL,
        backend=REDIS_URL,
        broker_transport_options={"key_prefix": prefix},
        result_backend_transport_options={"key_prefix": prefix},
    )
    return app, prefix


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Celeriac, Tasks]]:
    app, tag = _make_app(request.param, tmp_path)
    tasks = declare(app)
    try:
        with worker_thread(app, concurrency=4):
            yield app, tasks
    finally:
        app.close()
        if request.param == "redis":
            delete_redis_keys(REDIS_URL, tag)


# -- primitives --
def test_chain_passes_each_result_on(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    result = (t.add.s(2, 2) | t.add.s(4) | t.add.s(8)).apply_async()
    assert result.get(timeout=TIMEOUT) == 16
    assert chain(t.add.s(1, 1), t.add.s(1))().get(timeout=TIMEOUT) == 3  # called: sent
    assert group(t.add.s(1, 1), t.add.s(2, 2))().get(timeout=TIMEOUT) == [2, 4]
    assert t.add.chunks([(1, 1), (2, 2)], 1)().get(timeout=TIMEOUT) == [[2], [4]]
    assert result.parent is not None and result.parent.get(timeout=TIMEOUT) == 8
    assert chain(t.add.s(1, 1), t.mul.si(3, 3)).apply_async().get(timeout=TIMEOUT) == 9


def test_a_workflow_sent_twice_runs_twice(env: tuple[Celeriac, Tasks]) -> None:
    """Sending works on a copy: the user's workflow keeps no ids and may be sent again."""
    _, t = env
    flow = t.add.s(1, 1) | t.add.s(1)
    first, second = flow.apply_async(), flow.apply_async()
    assert first.id != second.id and flow.id is None
    assert (first.get(timeout=TIMEOUT), second.get(timeout=TIMEOUT)) == (3, 3)
    fan = group(t.add.s(1), t.add.s(2))
    low, high = fan.apply_async((1,)), fan.apply_async((10,))
    assert (low.get(timeout=TIMEOUT), high.get(timeout=TIMEOUT)) == ([2, 3], [11, 12])
    same = t.add.s(1, 1)
    assert chord([same] * 3, t.tsum.s()).apply_async().get(timeout=TIMEOUT) == 6
    again = chord([t.add.s(1, 1)], t.tsum.s())
    one, two = again.apply_async(), again.apply_async()
    assert one.id != two.id and (one.get(TIMEOUT), two.get(TIMEOUT)) == (2, 2)
    frozen = t.add.s(2, 2) | t.add.s(2)
    handle = frozen.freeze()  # frozen first: the send keeps those ids
    assert frozen.apply_async().id == handle.id and handle.get(timeout=TIMEOUT) == 6


def test_group_results_in_order_and_restorable(env: tuple[Celeriac, Tasks]) -> None:
    app, t = env
    result = group(t.add.s(i, i) for i in range(10)).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=TIMEOUT) == [i * 2 for i in range(10)]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 10
    restored = GroupResult.restore(result.id, app=app)
    assert restored is not None and restored.get(timeout=TIMEOUT) == [i * 2 for i in range(10)]
    assert [r.id for r in restored.children] == [r.id for r in result.children]


def test_chord_passes_the_header_results_to_the_body(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    assert chord(t.add.s(i, i) for i in range(10))(t.tsum.s()).get(timeout=TIMEOUT) == 90
    assert chord([], t.tsum.s()).apply_async().get(timeout=TIMEOUT) == 0


def test_chunks_map_and_starmap(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    chunked = t.add.chunks(zip(range(10), range(10), strict=True), 3).apply_async()
    assert chunked.get(timeout=TIMEOUT) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert t.ident.map([1, 2, 3]).delay().get(timeout=TIMEOUT) == [1, 2, 3]
    assert t.add.starmap([(1, 2), (3, 4)]).delay().get(timeout=TIMEOUT) == [3, 7]


def test_async_tasks_in_a_workflow(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    flow = chord([t.aadd.s(1, 1), t.aadd.s(2, 2) | t.aadd.s(1)], t.tsum.s())
    assert flow.apply_async().get(timeout=TIMEOUT) == 7


def test_group_revoke_stops_members_not_yet_run(tmp_path: Path) -> None:
    """One busy thread holds the queue back: of a revoked group, the member already queued in
    the threads pool and those still waiting in the consumer all end REVOKED."""
    app, _ = _make_app("memory", tmp_path)
    t = declare(app)
    key = uuid.uuid4().hex
    GATES[key] = threading.Event()
    try:
        with worker_thread(app, concurrency=1, prefetch_multiplier=1) as worker:
            blocker = t.gate.delay(1, key)
            members = group(t.add.s(i, i) for i in range(3)).apply_async()
            members.revoke()
            _wait_until(lambda: all(r.id in worker.state.revoked for r in members))
            GATES[key].set()
            assert blocker.get(timeout=TIMEOUT) == 1
            values = members.get(timeout=TIMEOUT, propagate=False)
        assert all(isinstance(v, TaskRevokedError) for v in values)
        assert members.ready() and not members.successful() and members.completed_count() == 0
    finally:
        GATES[key].set()
        app.close()


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_workflows_on_the_asyncio_pool(kind: str, tmp_path: Path) -> None:
    """async def steps run on the worker's loop and move the workflow on with the async twins."""
    app, tag = _make_app(kind, tmp_path)
    t = declare(app)
    try:
        with worker_thread(app, pool="asyncio", concurrency=20):
            flow = t.aadd.s(1, 1) | t.aadd.s(2) | t.aadd.s(3)
            assert flow.apply_async().get(timeout=TIMEOUT) == 7
            fan = chord([t.aadd.s(i, i) for i in range(20)], t.tsum.s()).apply_async()
            assert fan.get(timeout=TIMEOUT) == sum(2 * i for i in range(20))
            failed = (t.aadd.s(1, 1) | t.fail.s() | t.aadd.s(1)).apply_async()
            with pytest.raises(Boom):
                failed.get(timeout=TIMEOUT)
            assert failed.state == states.FAILURE
    finally:
        app.close()
        if kind == "redis":
            delete_redis_keys(REDIS_URL, tag)


# -- nesting --
def test_group_inside_a_chain_is_a_chord(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    flow = t.add.s(1, 1) | group(t.add.s(1), t.add.s(2)) | t.tsum.s()
    assert flow.apply_async().get(timeout=TIMEOUT) == 7


def test_chain_ending_in_a_group_returns_the_group(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    result = (t.add.s(1, 1) | group(t.add.s(1), t.add.s(2))).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=TIMEOUT) == [3, 4]


def test_chain_inside_a_group(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    result = group(t.add.s(1, 1) | t.add.s(1), t.add.s(5, 5)).apply_async()
    assert result.get(timeout=TIMEOUT) == [3, 10]


def test_chord_inside_a_chain(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    flow = t.add.s(1, 1) | chord([t.add.s(1), t.add.s(2)], t.tsum.s()) | t.add.s(100)
    assert flow.apply_async().get(timeout=TIMEOUT) == 107


def test_chord_whose_header_holds_chains_chords_and_groups(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    header = [
        t.add.s(1, 1) | t.add.s(1),  # 3
        chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s()),  # 6
        chord([t.add.s(1, 1), chord([t.add.s(1, 0), t.add.s(1, 1)], t.tsum.s())], t.tsum.s()),  # 5
        group(t.add.s(1, 1), t.add.s(1, 0)),  # a nested group is unrolled: 2, 1
    ]
    assert chord(header, t.tsum.s()).apply_async().get(timeout=TIMEOUT) == 3 + 6 + 5 + 2 + 1


def test_header_chain_ending_in_a_group_gives_one_list(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    header = [t.add.s(1, 1) | group(t.add.s(1), t.add.s(2)), t.add.s(0, 5)]
    assert chord(header, t.ident.s()).apply_async().get(timeout=TIMEOUT) == [[3, 4], 5]


def test_chain_of_groups(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    flow = group(t.add.s(1, 1), t.add.s(2, 2)) | group(t.tsum.s(), t.tsum.s())
    result = flow.apply_async()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=TIMEOUT) == [6, 6]


def test_chord_with_a_chain_body_and_a_group_body(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    body = t.tsum.s() | t.mul.s(10)
    assert chord([t.add.s(1, 1), t.add.s(2, 2)], body).apply_async().get(timeout=TIMEOUT) == 60
    fan = chord([t.add.s(1, 1), t.add.s(2, 2)], group(t.tsum.s(), t.ident.s())).apply_async()
    assert fan.get(timeout=TIMEOUT) == [6, [2, 4]]


def test_deeper_nestings(env: tuple[Celeriac, Tasks]) -> None:
    """Workflows checked against Celery 5.7 with bench/oracle (same values there)."""
    _, t = env
    deep = (t.add.s(1, 1) | t.add.s(1)) | (t.add.s(1) | (t.add.s(1) | (t.add.s(1) | t.mul.s(2))))
    assert deep.apply_async().get(timeout=TIMEOUT) == 12
    left = chord([t.add.s(1, 1) | t.add.s(1), t.add.s(2, 2) | t.add.s(2)], t.tsum.s())
    right = chord([t.add.s(3, 3) | t.add.s(3)], t.tsum.s())
    assert chord([left, right], t.tsum.s()).apply_async().get(timeout=TIMEOUT) == 18
    body = chord([t.tsum.s(), t.tsum.s()], t.tsum.s())
    assert chord([t.add.s(1, 1), t.add.s(2, 2)], body).apply_async().get(timeout=TIMEOUT) == 12
    then = group(t.add.s(1, 1), t.add.s(2, 2)) | chord([t.tsum.s(), t.tsum.s()], t.tsum.s())
    assert then.apply_async().get(timeout=TIMEOUT) == 12
    fan = group(
        chord([t.add.s(1), t.add.s(2)], t.tsum.s()), chord([t.mul.s(2), t.mul.s(3)], t.tsum.s())
    )
    assert (t.add.s(1, 1) | fan | t.tsum.s()).apply_async().get(timeout=TIMEOUT) == 17
    chords = chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s()) | chord(
        [t.add.s(1), t.mul.s(2)], t.tsum.s()
    )
    assert chords.apply_async().get(timeout=TIMEOUT) == 19


def test_link_options_of_a_chain_and_a_chord(env: tuple[Celeriac, Tasks]) -> None:
    """``apply_async(link=...)`` on a chain follows its last step, on a chord its body."""
    app, t = env
    tag = uuid.uuid4().hex
    flow = t.add.s(1, 1) | t.add.s(1)
    flow.apply_async(link=t.counted_add.s(0, tag).set(immutable=False))  # gets the 3
    _wait_until(lambda: runs(app, tag) == 1)
    fan = chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s())
    result = fan.apply_async(link=t.counted_add.s(0, f"{tag}-chord"))
    assert result.get(timeout=TIMEOUT) == 6
    _wait_until(lambda: runs(app, f"{tag}-chord") == 1)  # once, for the body: not per member
    failing = t.add.s(1, 1) | t.fail.s()
    failing.apply_async(link_error=t.on_error.s(f"{tag}-err"))
    _wait_until(lambda: runs(app, f"{tag}-err") == 1)


def test_a_one_task_group_in_a_chain_is_that_task(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env  # Celery 5.5 and later unroll it too
    assert (t.add.s(1, 1) | group(t.add.s(1)) | t.ident.s()).apply_async().get(TIMEOUT) == 3


# -- failures --
def test_failure_in_the_middle_of_a_chain(env: tuple[Celeriac, Tasks]) -> None:
    app, t = env
    tag = uuid.uuid4().hex
    flow = t.add.s(1, 1) | t.fail.s() | t.add.s(1)
    flow.link_error(t.on_error.s(tag))
    result = flow.apply_async()
    with pytest.raises(Boom):
        result.get(timeout=TIMEOUT)  # the step after the failure fails too: no hang
    assert result.state == states.FAILURE
    failed = result.parent
    assert failed is not None and failed.state == states.FAILURE
    assert failed.parent is not None and failed.parent.get(timeout=TIMEOUT) == 2
    _wait_until(lambda: runs(app, tag) == 1)
    assert runs(app, f"{tag}:{failed.id}") == 1  # the errback got the failed task's id


def test_an_errback_taking_request_exc_traceback_is_called_in_the_worker(
    env: tuple[Celeriac, Tasks],
) -> None:
    app, t = env
    tag = uuid.uuid4().hex
    result = t.fail.apply_async((7,), link_error=t.handler.s(tag))
    with pytest.raises(Boom):
        result.get(timeout=TIMEOUT)
    _wait_until(lambda: runs(app, f"{tag}:{result.id}:Boom") == 1)


def test_failing_chord_member_fails_the_body_with_chord_error(env: tuple[Celeriac, Tasks]) -> None:
    app, t = env
    tag = uuid.uuid4().hex
    body = t.counted_sum.s(tag)
    body.link_error(t.on_error.s(f"{tag}-err"))
    result = chord([t.add.s(1, 1), t.fail.s(), t.add.s(2, 2)], body).apply_async()
    with pytest.raises(Boom):  # as Celery: get() raises the failed member's own error...
        result.get(timeout=TIMEOUT)
    assert result.state == states.FAILURE  # ...while the body's stored result is a ChordError
    assert isinstance(result.result, ChordError) and "Boom" in str(result.result)
    with pytest.raises(ChordError):  # a handle rebuilt from the id alone knows no parents
        AsyncResult(result.id, app.backend, app=app).get(timeout=TIMEOUT)
    _wait_until(lambda: runs(app, f"{tag}-err") == 1)
    assert runs(app, f"{tag}-err:{result.id}") == 1
    assert runs(app, tag) == 0  # the body never ran


def test_failure_inside_a_nested_chord_reaches_the_outermost_result(
    env: tuple[Celeriac, Tasks],
) -> None:
    _, t = env
    inner = chord([t.add.si(1, 1), t.add.s(1) | t.fail.s()], t.tsum.s())
    flow = t.add.s(0, 1) | chord([inner, t.add.s(3)], t.tsum.s()) | t.add.s(1)
    result = flow.apply_async()
    with pytest.raises(ChordError, match="Boom"):  # the inner chord's stored error, as Celery
        result.get(timeout=TIMEOUT)
    assert result.state == states.FAILURE  # the step after it is failed too (Celery: PENDING)


def test_an_expired_member_or_step_ends_its_workflow(env: tuple[Celeriac, Tasks]) -> None:
    """Settled by the consumer without running (expired, revoked, unknown task), a member still
    counts for its chord and a step still fails the rest of its chain: nothing waits forever."""
    app, t = env
    fan = chord([t.add.s(1, 1), t.add.s(2, 2).set(expires=-1)], t.tsum.s()).apply_async()
    with pytest.raises(TaskRevokedError):
        fan.get(timeout=TIMEOUT)
    assert isinstance(fan.result, ChordError)
    steps = (t.add.s(1, 1) | t.add.s(2).set(expires=-1) | t.add.s(3)).apply_async()
    with pytest.raises(TaskRevokedError):
        steps.get(timeout=TIMEOUT)
    unknown = chord([t.add.s(1, 1), Signature("no-such-task", app=app)], t.tsum.s())
    with pytest.raises(ChordError, match="no-such-task"):
        AsyncResult(unknown.apply_async().id, app.backend, app=app).get(timeout=TIMEOUT)


def test_a_body_that_cannot_be_sent_fails_instead_of_hanging(env: tuple[Celeriac, Tasks]) -> None:
    app, t = env
    body = t.tsum.s().set(exchange="no-such-exchange", retry=False)
    result = chord([t.add.s(1, 1)], body).apply_async()
    with pytest.raises(ChordError, match="could not send the chord body"):
        AsyncResult(result.id, app.backend, app=app).get(timeout=TIMEOUT)


def test_a_member_redelivered_after_its_worker_died_mid_join_sends_the_body(
    env: tuple[Celeriac, Tasks],
) -> None:
    """The member that completed the count died before sending the body: its redelivered
    message finds the chord complete and no body sent, and sends it (once)."""
    app, t = env
    backend = app.backend
    assert backend is not None
    tag = uuid.uuid4().hex
    flow = chord([t.add.s(1, 1), t.add.s(2, 2)], t.counted_sum.s(tag))
    frozen = flow.freeze()
    header = flow.header
    backend.save_group(str(header.id), [str(m.id) for m in header.tasks])
    for member, value in zip(header.tasks, (2, 4), strict=True):
        backend.store(ResultMeta(str(member.id), states.SUCCESS, value))
    first, last = header.tasks
    body = flow.body.set(chord_size=2).to_dict()
    flow_join(app, str(header.id), str(first.id), body, None)
    backend.join_chord(str(header.id), str(last.id))  # counted, then the worker died
    flow_join(app, str(header.id), str(last.id), body, None)  # its redelivery
    flow_join(app, str(header.id), str(last.id), body, None)  # and another one
    assert frozen.get(timeout=TIMEOUT) == 6
    app.flush_results()
    assert runs(app, tag) == 1


def test_retry_with_headers_and_a_bare_retry(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    assert t.retry_headers.delay().get(timeout=TIMEOUT) == "acme"  # headers carried on
    bare = t.bare_retry.delay()
    _wait_until(lambda: bare.state == states.RETRY)  # stored by the worker itself


def test_retries_inside_a_chord_header_run_the_body_once(env: tuple[Celeriac, Tasks]) -> None:
    app, t = env
    tag = uuid.uuid4().hex
    result = chord([t.flaky.s(i, tag) for i in range(5)], t.counted_sum.s(f"{tag}-body"))()
    assert result.get(timeout=TIMEOUT) == 10
    assert [runs(app, f"{tag}:{i}") for i in range(5)] == [2] * 5  # each ran, retried, ran
    assert runs(app, f"{tag}-body") == 1


def test_a_redelivered_header_task_is_not_counted_twice(env: tuple[Celeriac, Tasks]) -> None:
    """The same header message delivered twice (as after a lost ack) must not complete the
    chord early: the body waits for the other member and runs once with both results."""
    app, t = env
    tag, key = uuid.uuid4().hex, uuid.uuid4().hex
    GATES[key] = threading.Event()
    flow = chord([t.counted_add.s(1, 0, tag), t.gate.s(2, key)], t.counted_sum.s(f"{tag}-body"))
    result = flow.apply_async()
    first = flow.header.tasks[0]
    _wait_until(lambda: runs(app, tag) == 1)
    Signature.from_dict(first.to_dict(), app).apply_async()  # the same message again
    _wait_until(lambda: runs(app, tag) == 2)
    app.flush_results()
    assert not result.ready()
    GATES[key].set()
    assert result.get(timeout=TIMEOUT) == 3
    assert runs(app, f"{tag}-body") == 1


def test_a_thousand_member_chord_runs_its_body_once(env: tuple[Celeriac, Tasks]) -> None:
    app, t = env
    tag = uuid.uuid4().hex
    result = chord((t.add.s(i, 0) for i in range(1000)), t.counted_sum.s(tag)).apply_async()
    assert result.get(timeout=60) == sum(range(1000))
    assert runs(app, tag) == 1


# -- replace and the results tree --
def test_replace_swaps_a_task_for_a_workflow(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    assert t.replacer.delay(3).get(timeout=TIMEOUT) == 8  # (3 + 1) * 2
    assert (t.replacer.s(3) | t.add.s(10)).apply_async().get(timeout=TIMEOUT) == 18
    in_chord = chord([t.replacer.s(1), t.add.s(1, 1)], t.tsum.s()).apply_async()
    assert in_chord.get(timeout=TIMEOUT) == 6


def test_root_and_parent_ids_on_every_message(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    result = (t.whoami.s() | t.whoami.s() | t.whoami.s()).apply_async()
    third: dict[str, Any] = result.get(timeout=TIMEOUT)
    assert result.parent is not None and result.parent.parent is not None
    second: dict[str, Any] = result.parent.get(timeout=TIMEOUT)
    first: dict[str, Any] = result.parent.parent.get(timeout=TIMEOUT)
    assert first["root_id"] == first["id"] and first["parent_id"] is None
    assert second["root_id"] == first["id"] and second["parent_id"] == first["id"]
    assert third["root_id"] == first["id"] and third["parent_id"] == second["id"]
    # members of a chord sent from outside a task are each their own root, as in Celery
    members = chord([t.whoami.s(), t.whoami.s()], t.ident.s()).apply_async().get(timeout=TIMEOUT)
    assert [m["root_id"] for m in members] == [m["id"] for m in members]
    # inside a workflow, everything it sends shares its root
    nested = (t.whoami.s() | chord([t.whoami.s(), t.whoami.s()], t.ident.s())).apply_async()
    assert len({m["root_id"] for m in nested.get(timeout=TIMEOUT)}) == 1


def test_children_and_collect(env: tuple[Celeriac, Tasks]) -> None:
    _, t = env
    result = (t.add.s(1, 1) | t.add.s(1) | t.add.s(1)).apply_async()
    assert result.get(timeout=TIMEOUT) == 4
    first = result.parent.parent  # type: ignore[union-attr]
    assert isinstance(first, AsyncResult)
    assert [value for _, value in first.collect()] == [2, 3, 4]
    assert [c.id for c in first.children] == [result.parent.id]  # type: ignore[union-attr]


def test_signatures_travel_as_dicts(env: tuple[Celeriac, Tasks]) -> None:
    app, t = env
    flow = t.add.s(1, 1) | chord([t.add.s(1), t.add.s(2) | t.add.s(3)], t.tsum.s())
    rebuilt = Signature.from_dict(flow.to_dict(), app)
    assert isinstance(rebuilt, chain) and rebuilt == flow
    assert rebuilt.apply_async().get(timeout=TIMEOUT) == 2 + 1 + 2 + 2 + 3


def _wait_until(check: object, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
