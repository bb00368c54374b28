"""Celery's "Canvas: Designing Work-flows" user guide
(docs.celeryq.dev/en/stable/userguide/canvas.html), against a real worker: signatures, partials,
immutability, callbacks and errbacks, chains, groups, chords, map, starmap and chunks.

The guide passes ``range(10)`` to ``xsum.map``; with the JSON serializer (the guide's default
too) a range cannot be sent, so these pass lists.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from parity_worker import TIMEOUT, Events, WorkerProcess, running_worker
from proj.celery import app
from proj.tasks import (
    add,
    create_user,
    echo,
    import_contacts,
    log_error,
    log_result,
    mul,
    notify_complete,
    on_chord_error,
    raising_task,
    reset_buffers,
    send_welcome_email,
    tsum,
    xsum,
)

from celeriac import ChordError, chain, chord, group, signature

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("worker")]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(tmp_path_factory.mktemp("canvas")) as process:
        yield process


@pytest.fixture
def seen() -> Events:
    return Events()


# -- Signatures ------------------------------------------------------------------------------
def test_signatures_by_name_and_by_task() -> None:
    """ "Signatures": ``signature('tasks.add', args=(2, 2), countdown=10)``,
    ``add.signature((2, 2), countdown=10)``, ``add.s(2, 2)``, and their fields."""
    app.set_default()  # as proj/celery.py's app is in a project (the test suite resets it)
    by_name = signature("proj.tasks.add", args=(2, 2), countdown=10)
    assert repr(by_name) == "proj.tasks.add(2, 2)"
    assert by_name.options == {"countdown": 10}
    assert repr(add.s(2, 2, debug=True)) == "proj.tasks.add(2, 2, debug=True)"
    s = add.signature((2, 2), {"debug": True}, countdown=10)
    assert s.args == (2, 2)
    assert s.kwargs == {"debug": True}
    assert s.options == {"countdown": 10}
    assert add.s(2, 2).set(countdown=1).options == {"countdown": 1}
    bound = signature("proj.tasks.add", args=(2, 2), app=app)
    assert bound.delay().get(timeout=TIMEOUT) == 4
    by_app = app.signature("proj.tasks.add", args=(2, 2), countdown=0.1)
    assert by_app.options == {"countdown": 0.1}
    assert by_app.delay().get(timeout=TIMEOUT) == 4


def test_a_signature_by_name_uses_the_default_app() -> None:
    """ "Signatures": ``signature('tasks.add', args=(2, 2), countdown=10)`` is sent like any
    other, through the current (default) app."""
    app.set_default()  # as proj/celery.py's app is in a project (the test suite resets it)
    assert signature("proj.tasks.add", args=(2, 2)).delay().get(timeout=TIMEOUT) == 4


def test_the_calling_api_of_signatures() -> None:
    """ "Signatures": calling a signature runs it here; ``delay`` and ``apply_async`` send it."""
    assert add(2, 2) == 4
    assert add.s(2, 2)() == 4
    assert add.delay(2, 2).get(timeout=TIMEOUT) == 4
    assert add.signature((2, 2), countdown=0.1).apply_async().get(timeout=TIMEOUT) == 4
    assert add.s(2, 2).apply_async(countdown=0.1).get(timeout=TIMEOUT) == 4


def test_partials() -> None:
    """ "Partials": arguments are prepended, keyword arguments merged (new ones win), options
    merged (new ones win); ``clone``."""
    partial = add.s(2)  # incomplete signature
    assert partial.delay(4).get(timeout=TIMEOUT) == 6  # 4 + 2
    assert partial.apply_async((4,)).get(timeout=TIMEOUT) == 6  # same
    s = echo.s(2, 2)
    assert s.delay(debug=True).get(timeout=TIMEOUT) == [[2, 2], {"debug": True}]
    assert s.apply_async(kwargs={"debug": True}).get(timeout=TIMEOUT) == [[2, 2], {"debug": True}]
    s = add.signature((2, 2), countdown=10)
    assert s.apply_async(countdown=0.1).get(timeout=TIMEOUT) == 4  # countdown is now 0.1
    s = add.s(2)
    assert repr(s.clone(args=(4,), kwargs={"debug": True})) == "proj.tasks.add(4, 2, debug=True)"


def test_immutability() -> None:
    """ "Immutability": ``reset_buffers.si()`` as a callback ignores the parent's result."""
    res = add.apply_async((2, 2), link=reset_buffers.si())
    assert res.get(timeout=TIMEOUT) == 4
    assert res.children[0].get(timeout=TIMEOUT) == "reset"


def test_immutability_by_the_signature_method() -> None:
    """ "Immutability": ``reset_buffers.signature(immutable=True)`` and
    ``add.signature((2, 2), immutable=True)``."""
    assert add.signature((2, 2), immutable=True).immutable is True
    res = add.apply_async((2, 2), link=reset_buffers.signature(immutable=True))
    assert res.get(timeout=TIMEOUT) == 4
    assert res.children[0].get(timeout=TIMEOUT) == "reset"


def test_invert_operator() -> None:
    """The guide's shell shortcut: ``~sig`` is ``sig.delay().get()``."""
    assert ~add.s(2, 2) == 4


def test_callbacks() -> None:
    """ "Callbacks": ``add.apply_async((2, 2), link=add.s(8))`` runs ``add(4, 8)``."""
    res = add.apply_async((2, 2), link=add.s(8))
    assert res.get(timeout=TIMEOUT) == 4
    assert res.children[0].get(timeout=TIMEOUT) == 12


# -- The Primitives: examples ---------------------------------------------------------------
def test_simple_chain_and_pipes() -> None:
    """ "The Primitives", Simple chain: ``chain(add.s(2, 2), add.s(4), add.s(8))()`` and pipes."""
    res = chain(add.s(2, 2), add.s(4), add.s(8))()
    assert res.get(timeout=TIMEOUT) == 16
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=TIMEOUT) == 16


def test_immutable_signatures_in_a_chain() -> None:
    """Immutable signatures: ``(add.si(2, 2) | add.si(4, 4) | add.si(8, 8))()``; the
    ``parent`` of each result is the step before. (``add.signature((2, 2), immutable=True)``:
    see the xfail test above.)"""
    res = (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))()
    assert res.get(timeout=TIMEOUT) == 16
    assert res.parent is not None
    assert res.parent.get(timeout=TIMEOUT) == 8
    assert res.parent.parent is not None
    assert res.parent.parent.get(timeout=TIMEOUT) == 4


def test_simple_group_and_chord() -> None:
    """Simple group; simple chord; a chord whose body is immutable (``.si``)."""
    res = group(add.s(i, i) for i in range(10))()
    assert res.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    res = chord((add.s(i, i) for i in range(10)), xsum.s())()
    assert res.get(timeout=TIMEOUT) == 90
    contacts = [1, 2, 3]
    res = chord((add.s(c, c) for c in contacts), notify_complete.si("import-7")).apply_async()
    assert res.get(timeout=TIMEOUT) == "import import-7 complete"


def test_blow_your_mind_by_combining() -> None:
    """Partial chains, chains of chains, a group chained to a task (a chord), the previous
    result forwarded to every task of a group, and immutable group members."""
    c1 = add.s(4) | mul.s(8)
    assert c1(16).get(timeout=TIMEOUT) == 160  # (16 + 4) * 8
    c2 = add.s(4, 16) | mul.s(2) | (add.s(4) | mul.s(8))
    assert c2().get(timeout=TIMEOUT) == 352  # ((4 + 16) * 2 + 4) * 8
    c3 = group(add.s(i, i) for i in range(10)) | xsum.s()
    assert c3().get(timeout=TIMEOUT) == 90
    new_user_workflow = create_user.s() | group(import_contacts.s(), send_welcome_email.s())
    res = new_user_workflow.delay(
        username="artv", first="Art", last="Vandelay", email="art@vandelay.com"
    )
    assert res.get(timeout=TIMEOUT) == ["contacts of artv", "welcome artv"]
    res = (add.s(4, 4) | group(add.si(i, i) for i in range(10)))()
    assert res.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert res.parent is not None
    assert res.parent.get(timeout=TIMEOUT) == 8


# -- Chains ----------------------------------------------------------------------------------
def test_chains_link_children_and_collect() -> None:
    """ "Chains": ``add.apply_async((2, 2), link=mul.s(16))``; ``res.children`` and
    ``res.collect()`` (the guide's ``res.get()`` reads 64, the child's value; it is 4)."""
    res = add.apply_async((2, 2), link=mul.s(16))
    assert res.get(timeout=TIMEOUT) == 4
    assert res.children[0].get(timeout=TIMEOUT) == 64
    assert [value for _, value in res.collect()] == [4, 64]
    assert [r.id for r, _ in res.collect()] == [res.id, res.children[0].id]


def test_signatures_linked_and_on_error(seen: Events) -> None:
    """``s.link(mul.s(4))``, ``s.link(log_result.s())``, and ``.on_error(log_error.s())``
    whose errback is called with ``(request, exc, traceback)``."""
    s = add.s(2, 2)
    s.link(mul.s(4))
    s.link(log_result.s())
    res = s.delay()
    assert res.get(timeout=TIMEOUT) == 4
    seen.wait("4", "log_result")
    assert res.children[0].get(timeout=TIMEOUT) == 16
    failed = raising_task.s().on_error(log_error.s()).delay()
    record = seen.wait(failed.id, "log_error")
    assert record["exc"] == "ValueError('something something')"


def test_chain_results_and_parents() -> None:
    """``chain(add.s(4, 4), mul.s(8), mul.s(10))()`` and its parents; the pipe form."""
    res = chain(add.s(4, 4), mul.s(8), mul.s(10))()
    assert res.get(timeout=TIMEOUT) == 640
    assert res.parent is not None
    assert res.parent.get(timeout=TIMEOUT) == 64
    assert res.parent.parent is not None
    assert res.parent.parent.get(timeout=TIMEOUT) == 8
    assert (add.s(2, 2) | mul.s(8) | mul.s(10)).apply_async().get(timeout=TIMEOUT) == 320


def test_chain_result_graph() -> None:
    """ "Graphs": ``res.parent.parent.graph``, the results that follow the first one (a
    mapping of each result to its children here; Celery's DependencyGraph iterates the same
    nodes)."""
    res = chain(add.s(4, 4), mul.s(8), mul.s(10))()
    assert res.get(timeout=TIMEOUT) == 640
    assert res.parent is not None
    assert res.parent.parent is not None
    graph = res.parent.parent.graph
    assert len(list(graph)) == 3
    assert [r.id for r in graph] == [res.parent.parent.id, res.parent.id, res.id]


# -- Groups ----------------------------------------------------------------------------------
def test_groups_and_group_results() -> None:
    """ "Groups" and "Group Results": calling a group, and the GroupResult operations."""
    g = group(add.s(2, 2), add.s(4, 4))
    res = g()
    assert res.get(timeout=TIMEOUT) == [4, 8]
    job = group(
        [
            add.s(2, 2),
            add.s(4, 4),
            add.s(8, 8),
            add.s(16, 16),
            add.s(32, 32),
        ]
    )
    result = job.apply_async()
    assert result.get(timeout=TIMEOUT) == [4, 8, 16, 32, 64]
    assert result.ready()  # have all subtasks completed?
    assert result.successful()  # were all subtasks successful?
    assert result.failed() is False
    assert result.waiting() is False
    assert result.completed_count() == 5
    assert result.join(timeout=TIMEOUT) == [4, 8, 16, 32, 64]
    result.revoke()
    assert len(group(add.s(i, i) for i in range(100))().get(timeout=TIMEOUT)) == 100


# -- Chords ----------------------------------------------------------------------------------
def test_chords() -> None:
    """ "Chords": ``chord(header)(callback)`` over a hundred additions."""
    assert chord(add.s(i, i) for i in range(100))(tsum.s()).get(timeout=TIMEOUT) == 9900
    callback = tsum.s()
    header = [add.s(i, i) for i in range(100)]
    result = chord(header)(callback)
    assert result.get(timeout=TIMEOUT) == 9900


def test_chord_error_handling(seen: Events) -> None:
    """ "Error handling": a failed header task fails the body with ChordError naming it
    (``get()`` raises the member's own error, as Celery 5.7 does); an errback on the body is
    called with ``(request, exc, traceback)``."""
    c = chord([add.s(4, 4), raising_task.s(), add.s(8, 8)], xsum.s())
    result = c()
    with pytest.raises(ValueError, match="something something"):
        result.get(timeout=TIMEOUT)
    assert isinstance(result.result, ChordError)
    assert "ValueError('something something')" in str(result.result)
    c2 = (group([add.s(1, 1), raising_task.s()]) | xsum.s().on_error(on_chord_error.s())).delay()
    record = seen.wait(c2.id, "on_chord_error")
    assert "ChordError" in record["exc"]


# -- Map & Starmap, Chunks ---------------------------------------------------------------------
def test_map_and_starmap() -> None:
    """ "Map & Starmap": one message that runs the task for every element."""
    assert xsum.map([list(range(10)), list(range(100))]).delay().get(timeout=TIMEOUT) == [45, 4950]
    starmap = add.starmap(zip(range(10), range(10), strict=True))
    assert starmap.delay().get(timeout=TIMEOUT) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    later = add.starmap(zip(range(10), range(10), strict=True)).apply_async(countdown=0.1)
    assert later.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_chunks() -> None:
    """ "Chunks": ``add.chunks(zip(range(100), range(100)), 10)``, called and sent, and
    converted to a group."""
    res = add.chunks(zip(range(100), range(100), strict=True), 10)()
    assert res.get(timeout=TIMEOUT) == [[2 * (10 * c + i) for i in range(10)] for c in range(10)]
    sent = add.chunks(zip(range(100), range(100), strict=True), 10).apply_async()
    assert len(sent.get(timeout=TIMEOUT)) == 10
    as_group = add.chunks(zip(range(100), range(100), strict=True), 10).group()
    assert len(as_group.tasks) == 10


def test_chunks_group_skew() -> None:
    """ "Chunks": ``group.skew(start=1, stop=10)`` gives the n-th task a countdown of n s."""
    as_group = add.chunks(zip(range(100), range(100), strict=True), 10).group()
    skewed = as_group.skew(start=1, stop=10)
    assert [t.options.get("countdown") for t in skewed.tasks] == [float(n) for n in range(1, 11)]
