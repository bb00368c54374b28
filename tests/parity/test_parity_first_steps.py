"""Celery's "First Steps with Celery" and "Next Steps" guides, against a real worker.

Each test is a snippet of those pages (docs.celeryq.dev/en/stable/getting-started/...), with
``from celery import ...`` changed to celeriac's imports. The project ``proj`` is laid out as "Next
Steps" lays it out; the worker is ``python -m celeriac -A proj worker`` (prefork, Celery's default
pool) on Redis. Where a page waits one second (``get(timeout=1)``) these wait longer: a loaded CI
machine must not fail a test that is right.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from parity_worker import TIMEOUT, WorkerProcess, running_worker
from proj.celery import app
from proj.tasks import add, echo, mul, unchecked_add, where, xsum

from celeriac import AsyncResult, chain, chord, group

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("worker")]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(tmp_path_factory.mktemp("first-steps")) as process:
        yield process


def test_the_worker_finds_proj_celery_with_A_proj_and_imports_include() -> None:
    """next-steps, "Starting the worker" and "About the --app argument": ``celery -A proj
    worker -l INFO`` finds the app in ``proj/celery.py``; ``include=['proj.tasks', ...]`` makes
    the worker import the tasks modules, which the test process never imports for it."""
    assert add.delay(2, 2).get(timeout=TIMEOUT) == 4
    sends: list[tuple[str, list[Any]]] = [
        ("proj.retries.get_tweets_stored", ["ann"]),
        ("proj.shared.shared_add", [1, 2]),
        ("proj.receivers.signalled", ["include", "ok"]),
    ]
    for name, args in sends:
        assert app.send_task(name, args).get(timeout=TIMEOUT) is not None, name


def test_first_steps_keeping_results() -> None:
    """first-steps-with-celery, "Keeping Results" (and the warning of the Tasks guide's
    "Result Backends": call ``get()`` or ``forget()`` on every result)."""
    result = add.delay(4, 4)
    assert result.get(timeout=TIMEOUT) == 8
    assert result.ready()
    assert result.get(propagate=False) == 8
    assert result.result == 8
    assert result.traceback is None
    result.forget()
    assert result.state == "PENDING"


def test_first_steps_configuration_from_a_module() -> None:
    """first-steps-with-celery, "Configuration": ``app.config_from_object('celeryconfig')`` and
    ``app.conf.update(...)`` in proj/celery.py."""
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.timezone == "Europe/Oslo"
    assert app.conf.enable_utc is True
    assert app.conf.result_expires == 3600


def test_next_steps_calling_tasks() -> None:
    """next-steps, "Calling Tasks": delay, apply_async, options, and calling in process."""
    assert add.delay(2, 2).get(timeout=TIMEOUT) == 4
    assert add.apply_async((2, 2)).get(timeout=TIMEOUT) == 4
    started = time.monotonic()
    # the page's countdown is 10 s
    res = add.apply_async((2, 2), queue="lopri", countdown=0.3)
    assert res.get(timeout=TIMEOUT) == 4
    assert time.monotonic() - started >= 0.3
    assert add(2, 2) == 4
    assert isinstance(res.id, str)
    assert len(res.id) == 36


def test_next_steps_errors_propagate() -> None:
    """next-steps, "Calling Tasks": ``get()`` re-raises the task's error, ``propagate=False``
    returns it; ``failed()``, ``successful()``, ``state``.

    The page sends ``add.delay(2)``; since Celery 4 that raises TypeError when called
    ("Argument checking" in the Tasks guide), so the failing call is made on a task declared
    with ``typing=False``, which lets the worker raise it.
    """
    with pytest.raises(TypeError):
        add.delay(2)  # type: ignore[call-arg]  # mypy sees it too: delay() is typed
    res = unchecked_add.delay(2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        res.get(timeout=TIMEOUT)
    assert isinstance(res.get(propagate=False), TypeError)
    assert res.failed() is True
    assert res.successful() is False
    assert res.state == "FAILURE"
    assert isinstance(res.result, TypeError)
    assert "TypeError" in (res.traceback or "")


def test_next_steps_pending_is_the_state_of_an_unknown_id() -> None:
    """next-steps: ``app.AsyncResult('this-id-does-not-exist').state == 'PENDING'``."""
    res = app.AsyncResult("this-id-does-not-exist")
    assert res.state == "PENDING"
    app.set_default()  # as proj/celery.py's app is in a project (the test suite resets it)
    assert AsyncResult("this-id-does-not-exist").state == "PENDING"


def test_next_steps_signatures_and_partials() -> None:
    """next-steps, "Canvas: Designing Work-flows": signatures, the calling API, partials."""
    assert repr(add.signature((2, 2), countdown=10)) == "proj.tasks.add(2, 2)"
    assert repr(add.s(2, 2)) == "proj.tasks.add(2, 2)"
    s1 = add.s(2, 2)
    assert s1.delay().get(timeout=TIMEOUT) == 4
    # incomplete partial: add(?, 2)
    s2 = add.s(2)
    # resolves the partial: add(8, 2)
    assert s2.delay(8).get(timeout=TIMEOUT) == 10
    s3 = echo.s(2, 2, debug=True)
    assert s3.delay(debug=False).get(timeout=TIMEOUT) == [[2, 2], {"debug": False}]


def test_next_steps_groups() -> None:
    """next-steps, "Groups", and the partial group."""
    assert group(add.s(i, i) for i in range(10))().get(timeout=TIMEOUT) == [
        0,
        2,
        4,
        6,
        8,
        10,
        12,
        14,
        16,
        18,
    ]
    g = group(add.s(i) for i in range(10))
    assert g(10).get(timeout=TIMEOUT) == [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]


def test_next_steps_chains() -> None:
    """next-steps, "Chains": ``chain(a | b)()``, a partial chain, and ``(a | b)()``."""
    # (4 + 4) * 8
    assert chain(add.s(4, 4) | mul.s(8))().get(timeout=TIMEOUT) == 64
    # (? + 4) * 8
    g = chain(add.s(4) | mul.s(8))
    assert g(4).get(timeout=TIMEOUT) == 64
    assert (add.s(4, 4) | mul.s(8))().get(timeout=TIMEOUT) == 64


def test_next_steps_chords() -> None:
    """next-steps, "Chords": a chord, and a group chained to a task (made a chord)."""
    assert chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=TIMEOUT) == 90
    assert (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=TIMEOUT) == 90


def test_next_steps_routing_with_task_routes() -> None:
    """next-steps, "Routing": ``app.conf.update(task_routes=...)`` and ``queue=`` at call time
    (the worker consumes ``-Q hipri,celery``)."""
    before: Any = app.conf.task_routes
    app.conf.update(
        task_routes={
            "proj.tasks.where": {"queue": "hipri"},
        },
    )
    try:
        assert where.delay().get(timeout=TIMEOUT) == ["hipri", 0]
    finally:
        app.conf.update(task_routes=before)
    assert where.delay().get(timeout=TIMEOUT) == ["celery", 0]
    assert where.apply_async(queue="hipri").get(timeout=TIMEOUT) == ["hipri", 0]
