"""Celery's "Signals" user guide and the parts of the "Workers Guide" that celeriac has today
(revoking, ``rate_limit``, time limits), against a real worker.

The worker-side receivers are in ``proj/receivers.py`` (the app's ``include`` loads it in the
worker and in each prefork child); they report what they were given (see ``proj/events.py``).
The publishing signals run in the sending process, so these tests connect their receivers
themselves, as the guide does, and disconnect them after.

Remote control with replies (``inspect()``, ``ping``, ``reply=True``) is tested against real
workers in tests/integration/test_remote_control.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from parity_worker import TIMEOUT, Events, WorkerProcess, running_worker
from proj.celery import app
from proj.tasks import add, long_running, mul, mytask_soft, runaway, where
from worker_harness import wait_until

from celeriac import AsyncResult, TaskRevokedError, TimeLimitExceeded
from celeriac.signals import after_task_publish, before_task_publish

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("worker")]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(tmp_path_factory.mktemp("signals")) as process:
        yield process


@pytest.fixture(scope="module")
def seen() -> Events:
    """One reader for the module: the worker's own records come once, at its start."""
    return Events()


def signalled_task() -> Any:
    """``proj.receivers.signalled``, by name: the test process never imports the receivers."""
    return app.signature("proj.receivers.signalled")


# -- Basics: publishing ------------------------------------------------------------------------
def test_after_task_publish_as_in_the_guide() -> None:
    """ "Basics": ``@after_task_publish.connect`` with ``info = headers if 'task' in headers
    else body``, and ``connect(sender='proj.tasks.add')`` for one task's sends only."""
    every: list[str] = []
    only_add: list[str] = []

    @after_task_publish.connect
    def task_sent_handler(
        sender: Any = None, headers: Any = None, body: Any = None, **kwargs: Any
    ) -> None:
        # information about task are located in headers for task messages
        # using the task protocol version 2.
        info = headers if "task" in headers else body
        every.append(info["id"])

    @after_task_publish.connect(sender="proj.tasks.add")
    def add_sent_handler(
        sender: Any = None, headers: Any = None, body: Any = None, **kwargs: Any
    ) -> None:
        info = headers if "task" in headers else body
        only_add.append(info["id"])

    try:
        res_add = add.delay(1, 1)
        res_mul = mul.delay(2, 2)
    finally:
        after_task_publish.disconnect(task_sent_handler)
        after_task_publish.disconnect(add_sent_handler, sender="proj.tasks.add")
    assert every == [res_add.id, res_mul.id]
    assert only_add == [res_add.id]
    assert res_mul.get(timeout=TIMEOUT) == 4


def test_before_task_publish_arguments() -> None:
    """``before_task_publish``: sender is the task name; body, exchange, routing_key, headers,
    properties, declare, retry_policy."""
    given: list[dict[str, Any]] = []

    def receiver(sender: Any = None, **kwargs: Any) -> None:
        given.append({"sender": sender, **kwargs})

    before_task_publish.connect(receiver)
    try:
        res = add.delay(3, 4)
    finally:
        before_task_publish.disconnect(receiver)
    assert res.get(timeout=TIMEOUT) == 7
    (call,) = given
    assert call["sender"] == "proj.tasks.add"
    assert call["headers"]["id"] == res.id
    assert call["headers"]["task"] == "proj.tasks.add"
    assert call["routing_key"] == "celery"
    for name in ("body", "exchange", "properties", "declare", "retry_policy"):
        assert name in call, name


# -- Task signals, in the worker -----------------------------------------------------------------
def test_task_prerun_postrun_success(seen: Events) -> None:
    """``task_prerun`` (task_id, task, args), ``task_postrun`` (retval, state) and
    ``task_success`` (result), with ``sender`` the task object."""
    res = signalled_task().delay("a", "ok")
    assert res.get(timeout=TIMEOUT) == "a ok"
    prerun = seen.wait(res.id, "task_prerun")
    assert prerun["task"] == "proj.receivers.signalled"
    assert prerun["args"] == ["a", "ok"]
    assert prerun["sender_is_task"] is True
    seen.wait("success:a ok", "task_success")
    postrun = seen.wait(res.id, "task_postrun")
    assert postrun["state"] == "SUCCESS"
    assert postrun["retval"] == "'a ok'"


def test_task_success_sender_request(seen: Events) -> None:
    """``task_success``: "Sender is the task object executed"; as in Celery, its request is
    still the current one, so a receiver reads ``sender.request.id``."""
    res = signalled_task().delay("success-request", "ok")
    assert res.get(timeout=TIMEOUT) == "success-request ok"
    assert seen.wait("success:success-request ok", "task_success")["request_id"] == res.id


def test_task_failure(seen: Events) -> None:
    """``task_failure``: task_id, exception, args, kwargs, traceback, einfo."""
    res = signalled_task().delay("b", "fail")
    with pytest.raises(ValueError, match="b failed"):
        res.get(timeout=TIMEOUT)
    failure = seen.wait(res.id, "task_failure")
    assert failure["exception"] == "ValueError('b failed')"
    assert failure["args"] == ["b", "fail"]
    assert failure["has_traceback"] is True
    assert "ValueError" in failure["einfo"]
    assert seen.wait(res.id, "task_postrun")["state"] == "FAILURE"


def test_task_retry(seen: Events) -> None:
    """``task_retry``: request and reason."""
    res = signalled_task().delay(f"c-{id(seen)}", "retry")
    assert res.get(timeout=TIMEOUT).endswith(" ok")
    assert seen.wait(res.id, "task_retry")["reason"] == "once more"


# -- Worker signals -----------------------------------------------------------------------------
def test_celeryd_init_with_and_without_a_sender(seen: Events) -> None:
    """``celeryd_init``: sender is the node name; ``connect(sender='worker12@example.com')``
    runs only on that node (it was connected first, so it would have reported first)."""
    init = seen.wait("worker", "celeryd_init")
    assert init["sender"].startswith("parity@")
    assert "configure_worker12" not in seen.kinds("worker")


def test_worker_ready_and_worker_process_init(seen: Events) -> None:
    """``worker_ready`` in the main process (sender: the consumer, with ``hostname``) and
    ``worker_process_init`` in each prefork child."""
    ready = seen.wait("worker", "worker_ready")
    assert ready["hostname"].startswith("parity@")
    seen.wait("worker", "worker_process_init")
    children = {r["pid"] for r in seen.seen["worker"] if r["kind"] == "worker_process_init"}
    assert ready["pid"] not in children


def test_celeryd_after_setup_adds_a_direct_queue(seen: Events) -> None:
    """``celeryd_after_setup``: a queue per worker named ``<nodename>.dq``, so a task can be
    routed to one worker (celeriac's form: ``instance.queues.append(Queue(name))``)."""
    node = seen.wait("worker", "worker_ready")["hostname"]
    queue = f"{node}.dq"
    assert where.apply_async(queue=queue).get(timeout=TIMEOUT)[0] == queue


# -- Workers Guide: revoking, rate limits, time limits ----------------------------------------
def test_revoke(worker: WorkerProcess) -> None:
    """ "Revoking tasks": ``result.revoke()``, ``AsyncResult(id).revoke()``,
    ``app.control.revoke(id)`` and a list of ids; a revoked task is REVOKED when it comes."""
    app.set_default()  # as proj/celery.py's app is in a project (the test suite resets it)
    results = [add.apply_async((i, i), countdown=0.5) for i in range(5)]
    results[0].revoke()
    AsyncResult(results[1].id).revoke()
    app.control.revoke(results[2].id)
    app.control.revoke([results[3].id, results[4].id])
    for result in results:
        with pytest.raises(TaskRevokedError):
            result.get(timeout=TIMEOUT)
        assert result.state == "REVOKED"


def test_revoke_stores_revoked_at_once(worker: WorkerProcess) -> None:
    """ "Revoking tasks", changed in 5.6: "the result backend is now immediately updated to
    reflect the REVOKED status" (a task with an ETA no longer stays PENDING)."""
    res = add.apply_async((2, 2), countdown=30)
    res.revoke()
    worker.wait_for_line(re.escape(f"revoked {res.id}"))
    wait_until(lambda: res.state == "REVOKED", 2.0, "REVOKED stored")


def test_revoke_terminate(seen: Events) -> None:
    """``app.control.revoke(id, terminate=True)`` stops the running task (prefork)."""
    res = long_running.delay()
    wait_until(lambda: res.state == "STARTED", TIMEOUT, "STARTED")
    app.control.revoke(res.id, terminate=True)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)
    assert add.delay(1, 1).get(timeout=TIMEOUT) == 2  # the pool goes on


def test_revoke_terminate_with_a_signal() -> None:
    """``app.control.revoke(id, terminate=True, signal='SIGKILL')``."""
    res = long_running.delay()
    wait_until(lambda: res.state == "STARTED", TIMEOUT, "STARTED")
    app.control.revoke(res.id, terminate=True, signal="SIGKILL")
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)


def test_rate_limit_remote_control(worker: WorkerProcess, seen: Events) -> None:
    """ "Rate limits": ``app.control.rate_limit('myapp.mytask', '200/m')``, and with
    ``destination=[...]`` only the workers named there."""
    app.control.rate_limit("proj.tasks.mul", "200/m")
    worker.wait_for_line("rate limit of proj.tasks.mul set to 200/m")
    node = seen.wait("worker", "worker_ready")["hostname"]
    app.control.rate_limit("proj.tasks.mul", "10000/m", destination=["nobody@example.com"])
    app.control.rate_limit("proj.tasks.mul", "100000/m", destination=[node])
    worker.wait_for_line("rate limit of proj.tasks.mul set to 100000/m")
    # commands are handled in order: the one for another node came first and was skipped
    assert "set to 10000/m" not in worker.stderr()
    assert mul.delay(2, 3).get(timeout=TIMEOUT) == 6


def test_time_limits() -> None:
    """ "Time Limits": a soft limit raises SoftTimeLimitExceeded in the task, which cleans up in
    a hurry; a hard limit ends it with TimeLimitExceeded (``time_limit``/``soft_time_limit``
    task options, "Tasks" guide)."""
    assert mytask_soft.delay().get(timeout=TIMEOUT) == "cleaned up"
    with pytest.raises(TimeLimitExceeded):
        runaway.delay().get(timeout=TIMEOUT)
    assert add.delay(2, 2).get(timeout=TIMEOUT) == 4
