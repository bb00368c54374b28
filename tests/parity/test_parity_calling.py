"""Celery's "Calling Tasks" and "Routing Tasks" user guides
(docs.celeryq.dev/en/stable/userguide/calling.html, .../routing.html), against a real worker.

The project's settings (``proj/celeryconfig.py``) declare the guide's queues (a topic exchange
``feeds`` for ``feed_tasks``, a direct exchange ``media`` for ``videos`` and ``images``) and its
routes in the items form (a name, a glob, a regular expression); the worker consumes them all
(``-Q celery,hipri,...``). Countdowns and etas are tenths of seconds where the guide's are
seconds or days.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from parity_worker import TIMEOUT, Events, WorkerProcess, running_worker
from proj import events
from proj.celery import app
from proj.routers import route_task
from proj.tasks import (
    add,
    echo,
    error_handler,
    headers_seen,
    hello,
    hipri_add,
    id_error_handler,
    import_feed,
    other_task,
    raising_task,
    reload_cache,
    video_compress,
    where,
)

from celeriac import TaskRevokedError, group

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("worker")]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(tmp_path_factory.mktemp("calling")) as process:
        yield process


@pytest.fixture
def seen() -> Events:
    return Events()


@pytest.fixture
def routes() -> Iterator[None]:
    """Lets a test install its own ``task_routes``, as the guide does, and puts the project's
    back afterwards."""
    before: Any = app.conf.task_routes
    yield
    app.conf.update(task_routes=before)


# -- Calling Tasks ---------------------------------------------------------------------------
def test_the_calling_api() -> None:
    """ "Basics", "Example": ``delay``, ``apply_async(args=..., kwargs=...)``, a signature's
    ``apply_async()``, and ``send_task`` for a task not registered here."""
    assert echo.delay(1, 2, kwarg1="x", kwarg2="y").get(timeout=TIMEOUT) == [
        [1, 2],
        {"kwarg1": "x", "kwarg2": "y"},
    ]
    assert echo.apply_async(args=[1, 2], kwargs={"kwarg1": "x", "kwarg2": "y"}).get(
        timeout=TIMEOUT
    ) == [[1, 2], {"kwarg1": "x", "kwarg2": "y"}]
    assert echo.s(1, 2, kwarg1="x").apply_async().get(timeout=TIMEOUT) == [[1, 2], {"kwarg1": "x"}]
    assert app.send_task("proj.retries.x", args=["send-task"]).get(timeout=TIMEOUT) is not None


def test_link_callback() -> None:
    """ "Linking": ``add.apply_async((2, 2), link=add.s(16))`` runs ``add(4, 16)``; the result
    keeps track of it (``res.children``, from "Canvas: Chains")."""
    res = add.apply_async((2, 2), link=add.s(16))
    assert res.get(timeout=TIMEOUT) == 4
    assert len(res.children) == 1
    assert res.children[0].get(timeout=TIMEOUT) == 20


def test_link_as_a_list(seen: Events) -> None:
    """``link=[add.s(16), other_task.s()]``: each callback gets the parent's result."""
    res = add.apply_async((2, 2), link=[add.s(16), other_task.s()])
    assert res.get(timeout=TIMEOUT) == 4
    seen.wait("4", "other_task")
    assert res.children[0].get(timeout=TIMEOUT) == 20


def test_link_error_with_request_exc_traceback(seen: Events) -> None:
    """ "Linking": ``def error_handler(request, exc, traceback)`` given as
    ``link_error=error_handler.s()`` is called with the failed task's request."""
    res = raising_task.apply_async(link_error=error_handler.s())
    with pytest.raises(ValueError, match="something something"):
        res.get(timeout=TIMEOUT)
    record = seen.wait(res.id, "error_handler")
    assert record["exc"] == "ValueError('something something')"
    assert "ValueError" in record["traceback"]


def test_link_error_with_the_failed_tasks_id(seen: Events) -> None:
    """The errback shape of older guides, ``def error_handler(uuid)``, reads the result by id.
    (Its ``result.get(propagate=False)`` inside a task needs ``disable_sync_subtasks=False``
    in Celery 5 as here.)"""
    res = raising_task.apply_async(link_error=id_error_handler.s())
    record = seen.wait(res.id, "id_error_handler")
    assert record["exc"] == "ValueError('something something')"
    assert "ValueError" in record["traceback"]


def test_on_message() -> None:
    """ "On message": ``r.get(on_message=on_raw_message, propagate=False)`` sees every state."""
    bodies: list[dict[str, Any]] = []
    r = hello.apply_async((4, 6))

    def on_raw_message(body: dict[str, Any]) -> None:
        bodies.append(body)
        if body["status"] == "PROGRESS":
            events.go(f"{r.id}:{body['result']['progress']}")

    try:
        assert r.get(on_message=on_raw_message, propagate=False) == "hello world: 10"
    finally:
        events.go(f"{r.id}:50")  # let the task end whatever happened
        events.go(f"{r.id}:90")
    assert [b["status"] for b in bodies] == ["PROGRESS", "PROGRESS", "SUCCESS"]
    assert bodies[0]["result"] == {"progress": 50}


def test_eta_and_countdown() -> None:
    """ "ETA and Countdown": ``countdown=`` seconds, ``eta=`` a datetime (aware, or naive UTC as
    the guide's ``datetime.utcnow() + timedelta(...)``)."""
    started = time.monotonic()
    result = add.apply_async((2, 2), countdown=0.3)
    assert result.get(timeout=TIMEOUT) == 4  # this takes at least 0.3 seconds to return
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    soon = datetime.now(UTC) + timedelta(seconds=0.3)
    assert add.apply_async((2, 2), eta=soon).get(timeout=TIMEOUT) == 4
    assert time.monotonic() - started >= 0.25
    started = time.monotonic()
    naive = datetime.utcnow() + timedelta(seconds=0.3)
    assert add.apply_async((2, 2), eta=naive).get(timeout=TIMEOUT) == 4
    assert time.monotonic() - started >= 0.25


def test_expiration(seen: Events) -> None:
    """ "Expiration": ``expires=60`` seconds or a datetime; an expired task is REVOKED
    (TaskRevokedError) and ``task_revoked`` says ``expired=True``."""
    assert add.apply_async((10, 10), expires=60).get(timeout=TIMEOUT) == 20
    kwargs: dict[str, Any] = {}
    tomorrow = datetime.now() + timedelta(days=1)
    assert add.apply_async((10, 10), kwargs, expires=tomorrow).get(timeout=TIMEOUT) == 20
    expired = add.apply_async((1, 1), countdown=0.3, expires=0.1)
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=TIMEOUT)
    assert expired.state == "REVOKED"
    assert seen.wait(expired.id, "task_revoked")["expired"] is True


def test_message_sending_retry_options() -> None:
    """ "Message Sending Retry": ``retry=False``, and ``retry=True`` with a ``retry_policy``."""
    assert add.apply_async((2, 2), retry=False).get(timeout=TIMEOUT) == 4
    policy = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
    assert add.apply_async((2, 2), retry=True, retry_policy=policy).get(timeout=TIMEOUT) == 4


def test_serializer_and_compression_per_call() -> None:
    """ "Serializers" and "Compression": ``serializer='json'``, ``compression='zlib'``."""
    assert add.apply_async((10, 10), serializer="json").get(timeout=TIMEOUT) == 20
    for compression in ("zlib", "gzip", "bzip2"):
        assert add.apply_async((2, 2), compression=compression).get(timeout=TIMEOUT) == 4


def test_connections_example_as_a_group() -> None:
    """ "Connections": the publisher example "better expressed as a group"."""
    numbers = [(2, 2), (4, 4), (8, 8), (16, 16)]
    res = group(add.s(i, j) for i, j in numbers).apply_async()
    assert res.get(timeout=TIMEOUT) == [4, 8, 16, 32]


def test_routing_options() -> None:
    """ "Routing options": ``queue=``, and the advanced ``exchange``, ``routing_key`` and
    ``priority``."""
    assert where.apply_async(queue="priority.high").get(timeout=TIMEOUT)[0] == "priority.high"
    assert where.apply_async(exchange="media", routing_key="media.image").get(timeout=TIMEOUT) == [
        "images",
        0,
    ]
    assert where.apply_async(priority=7).get(timeout=TIMEOUT) == ["celery", 7]


def test_headers_and_shadow(worker: WorkerProcess) -> None:
    """``apply_async(headers=...)`` reaches ``self.request``; ``shadow=`` is the name the
    worker logs the task under."""
    res = headers_seen.apply_async(headers={"tenant": "acme"}, shadow="tenant-report")
    got = res.get(timeout=TIMEOUT)
    assert got["tenant"] == "acme"
    assert got["in_headers"] == "acme"
    worker.wait_for_line(re.escape(f"Task tenant-report[{res.id}] succeeded"))


# -- Routing Tasks -----------------------------------------------------------------------------
def test_automatic_routing_by_glob_and_regex() -> None:
    """ "Automatic routing": a glob (``'proj.tasks.hipri_*'``) and a regular expression in the
    items form of ``task_routes``; the regex's queue ``media`` is created on demand."""
    assert hipri_add.delay(1, 2).get(timeout=TIMEOUT) == [3, "hipri"]
    assert video_compress.delay("a.mp4").get(timeout=TIMEOUT) == ["a.mp4", "media"]


def test_manual_routing_through_a_topic_exchange() -> None:
    """ "Manual routing": a route with ``routing_key='feed.import'`` reaches the queue bound with
    ``feed.#``, by the route or by ``apply_async(queue=..., routing_key=...)``."""
    url = "http://cnn.com/rss"
    assert import_feed.delay(url).get(timeout=TIMEOUT) == [url, "feed_tasks"]
    res = import_feed.apply_async(args=[url], queue="feed_tasks", routing_key="feed.import")
    assert res.get(timeout=TIMEOUT) == [url, "feed_tasks"]


def test_broadcast(seen: Events, tmp_path: Path) -> None:
    """ "Broadcast": ``task_queues = (Broadcast('broadcast_tasks'),)`` and a route to it: each
    worker consuming it gets a copy (here the module's worker and a second one)."""
    with running_worker(tmp_path, node="second@%h", clean=False):
        key = uuid.uuid4().hex
        reload_cache.delay(key)
        runs = seen.wait_many(key, "reload_cache", 2)
    assert sorted(r["hostname"].split("@")[0] for r in runs) == ["parity", "second"]


def test_router_function(routes: None) -> None:
    """ "Routers": ``def route_task(name, args, kwargs, options, task=None, **kw)`` installed as
    ``task_routes = (route_task,)``, and by name."""
    app.conf.task_routes = (route_task,)
    assert where.delay().get(timeout=TIMEOUT)[0] == "videos"
    app.conf.task_routes = ("proj.routers.route_task",)
    assert where.delay().get(timeout=TIMEOUT)[0] == "videos"
    app.conf.task_routes = [
        route_task,
        {"proj.tasks.add": {"queue": "hipri"}},
    ]
    assert where.delay().get(timeout=TIMEOUT)[0] == "videos"


def test_priority_in_a_route(routes: None) -> None:
    """ "Routers": a route may give the task's ``priority``; ``apply_async(priority=0)``
    overrides it. The guide's 10 is 9 here: celeriac's priorities are 0-9 on every broker, and
    a larger one is the highest (a deliberate difference, in the README's table)."""
    app.conf.task_routes = {"proj.tasks.where": {"queue": "hipri", "priority": 10}}
    assert where.delay().get(timeout=TIMEOUT) == ["hipri", 9]
    assert where.apply_async(priority=0).get(timeout=TIMEOUT) == ["hipri", 0]
