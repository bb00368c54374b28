"""Celery's "Tasks" user guide (docs.celeryq.dev/en/stable/userguide/tasks.html), against a real
worker: bound tasks and the request, logging, names, argument checking, retrying, states, the
semi-predicates, task classes and their handlers, ``@shared_task``, ignoring results.

The tasks live in ``proj/tasks.py``, ``proj/retries.py``, ``proj/classes.py`` and
``proj/shared.py``, written as the guide writes them; where the guide's delays are minutes, the
task's docstring says what it uses instead.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from parity_worker import TIMEOUT, Events, WorkerProcess, running_worker
from proj import events
from proj.celery import app
from proj.classes import DatabaseTask, add_fails, authenticate, hooked, process_rows
from proj.retries import (
    FailWhaleError,
    get_foo,
    get_tweets,
    get_tweets_stored,
    give_up,
    give_up_without_exc,
    refresh_timeline,
    requeues,
    retry_in_a_moment,
    send_twitter_status,
    some_task,
    x,
)
from proj.tasks import (
    add,
    add_logged,
    dump_context,
    hello,
    limited,
    long_running,
    mytask,
    named_add,
    request_extras,
    unchecked_add,
    update_page_info,
    update_page_info_anyway,
    upload_files,
)
from worker_harness import wait_until

from celeriac import AsyncResult, MaxRetriesExceededError, Task, group, signals

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("worker")]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(tmp_path_factory.mktemp("tasks")) as process:
        yield process


@pytest.fixture
def seen() -> Events:
    return Events()


def key() -> str:
    """A fresh key for a test's attempt counter."""
    return uuid.uuid4().hex


def test_bound_task_reads_its_request(worker: WorkerProcess) -> None:
    """ "Task Request", Example: ``@app.task(bind=True) def dump_context(self, x, y)``."""
    res = dump_context.delay(2, 3)
    got = res.get(timeout=TIMEOUT)
    assert got["id"] == res.id
    assert got["args"] == [2, 3]
    assert got["kwargs"] == {}
    assert got["retries"] == 0
    assert got["is_eager"] is False
    assert got["hostname"].startswith("parity@")
    assert got["root_id"] == res.id
    assert got["parent_id"] is None
    assert got["group"] is None
    assert got["correlation_id"] == res.id
    assert got["delivery_info"]["redelivered"] is False


def test_request_called_directly_origin_and_utc() -> None:
    """ "Task Request": ``called_directly``, ``origin`` (the sender's node name) and ``utc``."""
    got = request_extras.delay().get(timeout=TIMEOUT)
    assert got["called_directly"] is False
    assert got["origin"]
    assert got["utc"] is True


@pytest.mark.xfail(
    strict=True,
    reason="request.delivery_info has no 'exchange' or 'routing_key' (only queue, priority, "
    "redelivered)",
)
def test_request_delivery_info_names_exchange_and_routing_key() -> None:
    """ "Task Request": ``delivery_info`` is "a mapping containing the exchange and routing key
    used to deliver this task" (what ``Task.retry()`` resends to)."""
    got = request_extras.delay().get(timeout=TIMEOUT)
    assert got["exchange"] == "celery"
    assert got["routing_key"] == "celery"


def test_get_task_logger_names_the_task(worker: WorkerProcess) -> None:
    """ "Logging": ``logger = get_task_logger(__name__)``; the worker's log line names the task
    and its id."""
    res = add_logged.delay(2, 3)
    assert res.get(timeout=TIMEOUT) == 5
    worker.wait_for_line(re.escape(f"proj.tasks.add_logged[{res.id}]: Adding 2 + 3"))


def test_print_is_redirected_to_the_log(worker: WorkerProcess) -> None:
    """ "Logging": "You can also use print(), as anything written to standard out/-err will be
    redirected to the logging system" (``dump_context`` prints its request)."""
    res = dump_context.delay(2, 3)
    res.get(timeout=TIMEOUT)
    line = f"Executing task id {res.id}"
    wait_until(lambda: line in worker.output(), TIMEOUT, "the printed line")
    assert line in worker.stderr()


def test_names() -> None:
    """ "Names": an explicit ``name=`` and the generated ``module.function`` name."""
    assert named_add.name == "sum-of-two-numbers"
    assert add.name == "proj.tasks.add"
    assert named_add.delay(1, 2).get(timeout=TIMEOUT) == 3
    assert app.tasks["sum-of-two-numbers"] is named_add


def test_rate_limit_spaces_the_starts() -> None:
    """ "List of Options", ``Task.rate_limit``: "Tasks will be evenly distributed over the
    specified time frame": four tasks at ``'10/s'`` start over at least 0.3 s."""
    starts = sorted(group(limited.s(i) for i in range(4))().get(timeout=TIMEOUT))
    assert starts[-1] - starts[0] >= 0.29


def test_argument_checking() -> None:
    """ "Argument checking": a wrong call fails at ``delay()``; ``typing=False`` sends it and
    the worker raises."""
    with pytest.raises(TypeError):
        add.delay(8)  # type: ignore[call-arg]  # mypy sees it too: delay() is typed
    res = unchecked_add.delay(8)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        res.get(timeout=TIMEOUT)


def test_hiding_sensitive_information_in_arguments() -> None:
    """ "Hiding sensitive information in arguments": ``argsrepr=`` and ``kwargsrepr=``."""
    sent: list[dict[str, Any]] = []

    def capture(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        sent.append(dict(headers))

    signals.before_task_publish.connect(capture)
    try:
        add.apply_async((2, 3), argsrepr="(<secret-x>, <secret-y>)").get(timeout=TIMEOUT)
        dump_context.s(2, 3).set(kwargsrepr=repr({"card": "**** **** **** 5678"})).delay()
    finally:
        signals.before_task_publish.disconnect(capture)
    assert sent[0]["argsrepr"] == "(<secret-x>, <secret-y>)"
    assert sent[1]["kwargsrepr"] == "{'card': '**** **** **** 5678'}"


def test_retry_with_exc() -> None:
    """ "Retrying": ``raise self.retry(exc=exc)`` runs the task again with ``retries + 1``."""
    name = key()
    res = send_twitter_status.delay(name, 2)
    assert res.get(timeout=TIMEOUT) == 3
    assert res.state == "SUCCESS"
    assert events.attempts(name) == 3


def test_retry_countdown_overrides_default_retry_delay() -> None:
    """ "Using a custom retry delay": ``default_retry_delay=30 * 60`` and
    ``self.retry(exc=exc, countdown=...)``: the countdown wins (else this would take 30 min)."""
    assert retry_in_a_moment.delay(key()).get(timeout=TIMEOUT) == 2


def test_past_max_retries_the_tasks_own_error_is_raised() -> None:
    """ "Retrying": with ``exc=``, past ``max_retries`` the current exception is re-raised."""
    name = key()
    res = give_up.delay(name)
    with pytest.raises(FailWhaleError):
        res.get(timeout=TIMEOUT)
    assert res.state == "FAILURE"
    assert events.attempts(name) == 3  # the first run and max_retries=2 retries


def test_past_max_retries_without_exc_is_max_retries_exceeded() -> None:
    """ "Retrying": "An exc argument wasn't given. In this case the MaxRetriesExceededError
    exception will be raised"."""
    with pytest.raises(MaxRetriesExceededError):
        give_up_without_exc.delay(key()).get(timeout=TIMEOUT)


def test_autoretry_for_with_retry_kwargs() -> None:
    """ "Automatic retry for known exceptions": ``autoretry_for=(FailWhaleError,)``,
    ``retry_kwargs={'max_retries': 5}``."""
    name = key()
    assert refresh_timeline.delay(name).get(timeout=TIMEOUT) == 3
    assert events.attempts(name) == 3


def test_autoretry_with_retry_backoff() -> None:
    """``autoretry_for=(RequestException,), retry_backoff=True``: retried after at most 1 s."""
    assert x.delay(key()).get(timeout=TIMEOUT) == 2


def test_throws_is_an_expected_error(worker: WorkerProcess) -> None:
    """ "Task.throws": stored as a failure, logged at INFO without a traceback."""
    res = get_foo.delay("foo")
    with pytest.raises(KeyError):
        res.get(timeout=TIMEOUT)
    line = worker.wait_for_line(re.escape(f"proj.retries.get_foo[{res.id}] raised expected"))
    assert "INFO" in line


def test_custom_state_progress_and_info() -> None:
    """ "Custom states" (and "Calling Tasks", "On message"): ``self.update_state(state=
    'PROGRESS', meta={...})`` reads as ``result.state`` and ``result.info`` while it runs."""
    res = hello.apply_async((4, 6))
    for progress in (50, 90):
        wait_until(functools.partial(_in_progress, res, progress), TIMEOUT, f"PROGRESS {progress}")
        events.go(f"{res.id}:{progress}")
    assert res.get(timeout=TIMEOUT) == "hello world: 10"


def test_custom_states_upload_files() -> None:
    """ "Custom states": the guide's ``upload_files``, which asks
    ``self.request.called_directly`` before each ``update_state``; called directly too."""
    assert upload_files.delay(["a", "b"]).get(timeout=TIMEOUT) is None
    upload_files(["a", "b"])


def _in_progress(res: AsyncResult[Any], progress: int) -> bool:
    return res.state == "PROGRESS" and res.info == {"progress": progress}


def test_track_started_stores_pid_and_hostname() -> None:
    """ "Task.track_started": the state is STARTED while it runs, with ``result.info['pid']``
    and ``['hostname']``."""
    res = long_running.delay()
    try:
        wait_until(lambda: res.state == "STARTED", TIMEOUT, "STARTED")
        assert isinstance(res.info["pid"], int)
        assert res.info["hostname"].startswith("parity@")
    finally:
        events.go(res.id)
    assert res.get(timeout=TIMEOUT) == "done"


def test_ignore_records_no_state(seen: Events) -> None:
    """ "Semipredicates", Ignore: ``raise Ignore()``: no state is recorded for the task."""
    res = some_task.delay(True)
    seen.wait(res.id, "task_postrun")
    assert res.state == "PENDING"
    assert some_task.delay(False).get(timeout=TIMEOUT) == "ran"


def test_ignore_after_storing_the_result_by_hand() -> None:
    """ "Semipredicates", Ignore: ``update_state(state=states.SUCCESS, meta=timeline)`` then
    ``raise Ignore()`` keeps the state stored by hand (without ``called_directly``, which is
    missing: see the xfail below)."""
    res = get_tweets_stored.delay("ann")
    assert res.get(timeout=TIMEOUT) == ["ann: first", "ann: second"]


def test_ignore_after_storing_the_result_by_hand_as_documented() -> None:
    """The guide's ``get_tweets``, which tests ``self.request.called_directly``."""
    res = get_tweets.delay("ann")
    assert res.get(timeout=TIMEOUT) == ["ann: first", "ann: second"]


def test_reject_requeue_runs_the_task_again() -> None:
    """ "Semipredicates", Reject: ``raise Reject('no reason', requeue=True)`` unless
    ``self.request.delivery_info['redelivered']``: it runs a second time."""
    assert requeues.delay().get(timeout=TIMEOUT) == "received two times"


def test_task_inheritance_on_failure(seen: Events) -> None:
    """ "Task inheritance": ``@app.task(base=MyTask)`` whose ``on_failure`` runs in the worker."""
    res = add_fails.delay(2, 3)
    with pytest.raises(KeyError):
        res.get(timeout=TIMEOUT)
    record = seen.wait(res.id, "on_failure")
    assert record["exc"] == "KeyError()"
    assert record["args"] == [2, 3]
    assert "KeyError" in record["einfo"]
    assert isinstance(add_fails, Task)


def test_handlers_run_in_celerys_order(seen: Events) -> None:
    """ "Handlers": before_start, on_success, after_return for a success; before_start,
    on_failure, after_return for a failure."""
    res = hooked.delay(key(), 0)
    assert res.get(timeout=TIMEOUT) == 1
    assert seen.wait(res.id, "after_return")["status"] == "SUCCESS"
    assert seen.kinds(res.id) == ["before_start", "on_success", "after_return"]
    failed = hooked.delay(key(), -1)
    with pytest.raises(ValueError):
        failed.get(timeout=TIMEOUT)
    assert seen.wait(failed.id, "after_return")["status"] == "FAILURE"
    assert seen.kinds(failed.id) == ["before_start", "on_failure", "after_return"]


def test_handlers_around_a_retry(seen: Events) -> None:
    """ "Handlers": a retried run calls on_retry, and after_return only after the final run
    (Celery's trace: ``if state not in IGNORE_STATES: task_after_return(...)``)."""
    res = hooked.delay(key(), 1)
    assert res.get(timeout=TIMEOUT) == 2
    seen.wait(res.id, "after_return", status="SUCCESS")
    # the retry message is sent before on_retry runs, so the second run's hooks may come first
    assert Counter(seen.kinds(res.id)) == {
        "before_start": 2,
        "on_retry": 1,
        "on_success": 1,
        "after_return": 1,
    }


def test_base_class_caches_a_resource_per_process() -> None:
    """ "Instantiation", Per task usage: ``@app.task(base=DatabaseTask)``; ``process_rows.db``
    is made once per process and stays the same in it."""
    runs = group(process_rows.s() for _ in range(8))().get(timeout=TIMEOUT)
    by_pid: dict[int, set[int]] = {}
    for pid, number in runs:
        by_pid.setdefault(pid, set()).add(number)
    assert all(len(numbers) == 1 for numbers in by_pid.values()), by_pid
    assert isinstance(process_rows, DatabaseTask)


def test_class_based_task_keeps_its_state() -> None:
    """ "Instantiation": a class-based task with its own ``__init__`` and ``run``, registered
    with ``app.register_task`` (calling ``super().__init__()``; the guide's own form is the
    xfail test in test_parity_app)."""
    assert authenticate.name == "proj.classes.AuthenticateServer"
    assert authenticate.delay("george", "password").get(timeout=TIMEOUT) is True
    assert authenticate.delay("bob", "password").get(timeout=TIMEOUT) is False


def test_shared_task() -> None:
    """ "Basics": ``from celery import shared_task``; the worker runs its own app's copy.
    (Imported here, not at the top: a shared task joins every app made after it, and the test
    suite forgets it after each test so that other tests' apps hold only their own tasks.)"""
    from proj.shared import shared_add, whoami

    app.set_default()  # as proj/celery.py's app is in a project (the test suite resets it)
    assert shared_add.delay(2, 3).get(timeout=TIMEOUT) == 5
    assert whoami.delay().get(timeout=TIMEOUT) == "proj"


def test_ignore_results_you_dont_want() -> None:
    """ "Ignore results you don't want": ``@app.task(ignore_result=True)``, and
    ``ignore_result=`` per call (the guide writes ``mytask.apply_async(1, 2, ...)``)."""
    assert mytask.delay().get(timeout=TIMEOUT) is None
    assert add.apply_async((1, 2), ignore_result=True).get(timeout=TIMEOUT) is None
    assert add.apply_async((1, 2), ignore_result=False).get(timeout=TIMEOUT) == 3


def test_avoid_launching_synchronous_subtasks() -> None:
    """ "Avoid launching synchronous subtasks": ``get()`` inside a task raises RuntimeError,
    unless ``disable_sync_subtasks=False``."""
    with pytest.raises(RuntimeError):
        update_page_info.delay("a").get(timeout=TIMEOUT)
    assert update_page_info_anyway.delay("a").get(timeout=TIMEOUT) == "<html>a</html>"
