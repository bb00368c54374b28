"""Signatures and workflow primitives as data (no worker): partials, freezing, serialization,
normalisation, and eager runs (``task_always_eager`` / ``apply()``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import (
    Celeriac,
    ChordError,
    GroupResult,
    ImproperlyConfigured,
    Signature,
    Task,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    xmap,
    xstarmap,
)
from celeriac.testing import memory_app


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = memory_app("canvas-unit")
    yield application
    application.close()


@pytest.fixture
def add(app: Celeriac) -> Task[Any, Any]:
    @app.task(name="u.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    return add


@pytest.fixture
def tsum(app: Celeriac) -> Task[Any, Any]:
    @app.task(name="u.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    return tsum


# -- signatures --
def test_partial_application_prepends_args_and_merges_kwargs(add: Task[Any, Any]) -> None:
    sig = add.s(10, y=1).set(queue="q")
    called = sig.clone((5,), {"y": 2}, priority=3)
    assert called.args == (5, 10) and called.kwargs == {"y": 2}
    assert called.options == {"queue": "q", "priority": 3}
    assert sig.args == (10,) and sig.kwargs == {"y": 1}  # the original is untouched


def test_immutable_signatures_ignore_the_parent_result(add: Task[Any, Any]) -> None:
    assert add.s(1, 2).set(immutable=True, queue="q").immutable
    sig = add.si(1, 2)
    assert sig.clone((99,), {"y": 5}).args == (1, 2)
    assert sig.clone((99,), {"y": 5}).kwargs == {}


def test_freeze_fixes_the_id_before_sending(add: Task[Any, Any]) -> None:
    sig = add.s(1, 2)
    result = sig.freeze()
    assert sig.id == result.id and sig.freeze().id == result.id  # freezing twice keeps it
    assert add.s(1).freeze("given").id == "given"


def test_link_and_link_error_add_in_place(add: Task[Any, Any], tsum: Task[Any, Any]) -> None:
    sig = add.s(1, 1)
    assert sig.link(tsum.s()) == tsum.s()
    sig.link_error({"task": "u.tsum", "args": [], "kwargs": {}, "options": {}})
    assert [s["task"] for s in sig.to_dict()["options"]["link"]] == ["u.tsum"]
    assert len(sig.options["link_error"]) == 1


def test_every_kind_round_trips_through_a_dict(
    app: Celeriac, add: Task[Any, Any], tsum: Task[Any, Any]
) -> None:
    flows: list[Signature] = [
        add.s(1, y=2),
        add.s(1) | add.s(2),
        group(add.s(1, 1), add.s(2, 2)),
        chord([add.s(1, 1), add.s(2) | add.s(3)], tsum.s()),
        add.chunks([(1, 2), (3, 4)], 1),
        add.map([1, 2]),
        add.starmap([(1, 2)]),
    ]
    for flow in flows:
        rebuilt = Signature.from_dict(flow.to_dict(), app)
        assert type(rebuilt) is type(flow)
        assert rebuilt == flow
        assert rebuilt.to_dict() == flow.to_dict()


def test_signature_from_a_name_alone(app: Celeriac) -> None:
    sig = signature("some.task", (1,), {"a": 2}, {"queue": "q"}, app=app)
    assert sig.task == "some.task" and sig.options == {"queue": "q"}
    assert maybe_signature(sig.to_dict(), app) == sig


def test_malformed_signatures_are_refused(app: Celeriac) -> None:
    with pytest.raises(ImproperlyConfigured, match="not a signature"):
        Signature.from_dict({"args": []})
    with pytest.raises(ImproperlyConfigured, match="malformed args"):
        Signature.from_dict({"task": "t", "args": "abc"})
    with pytest.raises(ImproperlyConfigured, match="expected a signature"):
        maybe_signature(42)
    Signature("unbound").delay()  # no app given: the default app (the fixture's) sends it
    with pytest.raises(ImproperlyConfigured, match="n must be at least 1"):
        chunks(Signature("t", app=app), [(1,)], 0)


# -- building workflows --
def test_an_empty_group_needs_no_app() -> None:
    assert group([]).apply_async().get() == []  # nothing to send: Celery returns [] too


def test_pipe_builds_one_flat_chain(add: Task[Any, Any]) -> None:
    flow = add.s(1) | add.s(2) | (add.s(3) | add.s(4))
    assert isinstance(flow, chain)
    assert [t.args for t in flow.normalize()] == [(1,), (2,), (3,), (4,)]


def test_a_group_followed_by_steps_becomes_a_chord(
    add: Task[Any, Any], tsum: Task[Any, Any]
) -> None:
    flow = add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s() | add.s(5)
    steps = flow.normalize()
    assert len(steps) == 2 and isinstance(steps[1], chord)
    body = steps[1].body
    assert isinstance(body, chain) and [t.task for t in body.tasks] == ["u.tsum", "u.add"]


def test_nested_groups_are_unrolled(add: Task[Any, Any]) -> None:
    flow = group(add.s(1), group(add.s(2), group(add.s(3))), add.chunks([(1, 1)] * 3, 2))
    tasks = flow.flatten()
    assert [t.task for t in tasks] == ["u.add"] * 3 + ["celery.starmap"] * 2


def test_freezing_a_workflow_names_every_result(add: Task[Any, Any], tsum: Task[Any, Any]) -> None:
    flow = add.s(1, 1) | chord([add.s(1), add.s(2)], tsum.s())
    result = flow.freeze()
    assert result.id == flow.id
    header = result.parent
    assert isinstance(header, GroupResult) and len(header) == 2
    assert all(r.id for r in header)
    assert header.parent is not None  # the chain's first task


def test_a_chord_with_a_chain_body_keeps_the_whole_tree(
    add: Task[Any, Any], tsum: Task[Any, Any]
) -> None:
    result = chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(1)).freeze()
    first_step = result.parent
    assert first_step is not None and not isinstance(first_step, GroupResult)
    assert isinstance(first_step.parent, GroupResult) and len(first_step.parent) == 2


def test_chunks_split_into_starmap_messages(add: Task[Any, Any]) -> None:
    parts = add.chunks(zip(range(5), range(5), strict=True), 2).group().tasks
    assert [type(p) for p in parts] == [xstarmap] * 3
    assert [p.kwargs["it"] for p in parts] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]], [[4, 4]]]
    assert isinstance(add.map([1]), xmap)


# -- eager runs --
def test_workflows_run_eagerly(add: Task[Any, Any], tsum: Task[Any, Any]) -> None:
    assert (add.s(1, 1) | add.s(2)).apply().get() == 4
    assert group(add.s(i, i) for i in range(3)).apply().get() == [0, 2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply().get() == 6
    assert add.chunks([(1, 1), (2, 2), (3, 3)], 2).apply().get() == [[2, 4], [6]]
    assert (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s()).apply().get() == 7


def test_task_always_eager_runs_workflows_here() -> None:
    app = memory_app("eager", task_always_eager=True)

    @app.task(name="e.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="e.boom")
    def boom(*args: Any) -> None:
        raise ValueError("boom")

    @app.task(name="e.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    assert (add.s(1, 2) | add.s(3)).delay().get() == 6
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async().get() == 6
    failing = chord([add.s(1, 1), boom.s()], tsum.s()).apply_async()
    with pytest.raises(ChordError, match="boom"):
        failing.get()
    stopped = (add.s(1, 1) | boom.s() | add.s(1)).apply_async()
    with pytest.raises(ValueError, match="boom"):
        stopped.get()
    app.close()
