"""Celery's documented API for apps and tasks, as a Celery user writes it, run by a real worker
loop (in a thread, on the in-memory broker): shared tasks, the default app, base classes and
hooks, class-based tasks, update_state, task loggers, headers, shadow names, track_started,
ignore_result, link children, app.signature, the publish signals."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import (
    AsyncResult,
    Celeriac,
    GroupResult,
    ImproperlyConfigured,
    Task,
    current_app,
    current_task,
    shared_task,
    signals,
    states,
)
from celeriac.testing import memory_app, worker_thread
from celeriac.utils.log import get_task_logger

TIMEOUT = 10


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = memory_app("celery-api")
    yield application
    application.close()


# -- the default app ------------------------------------------------------------------------------


def test_the_app_created_last_is_the_default_until_one_is_chosen() -> None:
    first = memory_app("first")
    assert current_app() is first
    second = memory_app("second")
    assert current_app() is second
    quiet = memory_app("quiet", set_as_current=False)
    assert current_app() is second
    first.set_default()
    memory_app("later")
    assert current_app() is first  # an explicit choice holds against apps created later
    quiet.set_default()
    assert current_app() is quiet


def test_asyncresult_by_id_alone_reads_the_default_app(app: Celeriac) -> None:
    app.set_default()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with worker_thread(app):
        sent = add.delay(2, 3)
        assert AsyncResult(sent.id).get(timeout=TIMEOUT) == 5
        assert AsyncResult(sent.id).app is app
        assert AsyncResult(sent.id, app=app).state == states.SUCCESS


def test_current_task_and_current_app_inside_a_task(app: Celeriac) -> None:
    app.set_default()
    seen: list[Any] = []

    @app.task
    def probe() -> str:
        task = current_task()
        seen.append(task)
        assert task is not None
        return task.request.id

    assert current_task() is None
    with worker_thread(app):
        result = probe.delay()
        assert result.get(timeout=TIMEOUT) == result.id
    assert seen[0].name == probe.name
    assert current_app() is app


# -- @shared_task ---------------------------------------------------------------------------------


def test_a_shared_task_joins_apps_created_before_and_after_it() -> None:
    before = memory_app("before")

    @shared_task
    def shout(word: str) -> str:
        return word.upper()

    after = memory_app("after")
    for application in (before, after):
        own = application.tasks[shout.name]
        assert own.app is application  # each app runs its own copy, with its own backend
        assert own is not shout
    assert shout.app is after  # used directly, it goes through the default app

    with worker_thread(before):
        before.set_default()
        assert shout.delay("hi").get(timeout=TIMEOUT) == "HI"
    with worker_thread(after):
        after.set_default()
        assert shout.delay("yo").get(timeout=TIMEOUT) == "YO"


def test_shared_task_with_options_and_base() -> None:
    class Audited(Task[Any, Any]):
        max_retries = 7

    @shared_task(bind=True, base=Audited, name="shared.audited")
    def audited(self: Task[[], str]) -> str:
        return type(self).__name__

    app = memory_app("shared-options")
    own = app.tasks["shared.audited"]
    assert isinstance(own, Audited)
    assert own.max_retries == 7
    with worker_thread(app):
        assert own.delay().get(timeout=TIMEOUT) == "audited"
    with pytest.raises(ImproperlyConfigured, match="unknown task option"):
        shared_task(no_such_option=1)


# -- base classes, hooks, class-based tasks -------------------------------------------------------


class Recording(Task[Any, Any]):
    """A Celery-style base class: class attributes as defaults, every hook recorded."""

    max_retries = 1
    default_retry_delay = 0
    calls: list[tuple[Any, ...]] = []

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("before_start", task_id, tuple(args), dict(kwargs)))

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("on_success", retval, task_id))

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self.calls.append(("on_failure", type(exc).__name__, task_id, "Traceback" in str(einfo)))

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self.calls.append(("on_retry", type(exc).__name__, task_id))

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self.calls.append(("after_return", status, task_id))


def test_base_class_hooks_run_in_celerys_order(app: Celeriac) -> None:
    Recording.calls = []
    done = threading.Event()

    @app.task(base=Recording, bind=True)
    def work(self: Task[[int], int], x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        if x == 0 and self.request.retries == 0:
            raise self.retry(exc=KeyError("again"))
        return x * 2

    assert isinstance(work, Recording)
    assert work.max_retries == 1

    def finished(sender: Any = None, **kw: Any) -> None:
        if kw.get("state") in (states.SUCCESS, states.FAILURE):
            done.set()

    signals.task_postrun.connect(finished, weak=False)
    try:
        with worker_thread(app, concurrency=1):
            ok = work.delay(21)
            assert ok.get(timeout=TIMEOUT) == 42
            bad = work.delay(-1)
            with pytest.raises(ValueError):
                bad.get(timeout=TIMEOUT)
            retried = work.delay(0)
            assert retried.get(timeout=TIMEOUT) == 0
    finally:
        signals.task_postrun.disconnect(finished)
    by_id: dict[str, list[str]] = {}
    for call in Recording.calls:
        task_id = next(a for a in call[1:] if isinstance(a, str) and len(a) == 36)
        by_id.setdefault(task_id, []).append(call[0])
    assert by_id[ok.id] == ["before_start", "on_success", "after_return"]
    assert by_id[bad.id] == ["before_start", "on_failure", "after_return"]
    assert by_id[retried.id] == [  # no after_return after a retry, as in Celery
        "before_start",
        "on_retry",
        "before_start",
        "on_success",
        "after_return",
    ]
    failure = next(c for c in Recording.calls if c[0] == "on_failure")
    assert failure[1] == "ValueError" and failure[3] is True  # einfo shows the traceback


def test_a_hook_that_raises_is_logged_and_changes_nothing(
    app: Celeriac, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Task[Any, Any]):
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            raise RuntimeError("hook bug")

    @app.task(base=Broken)
    def fine() -> int:
        return 1

    with worker_thread(app), caplog.at_level(logging.ERROR, "celeriac.worker"):
        assert fine.delay().get(timeout=TIMEOUT) == 1
    assert any("on_success hook raised" in r.getMessage() for r in caplog.records)


def test_app_Task_subclass_and_class_based_task(app: Celeriac) -> None:
    class Multiply(app.Task):  # type: ignore[name-defined,misc]
        name = "math.multiply"
        factor = 3

        def run(self, x: int) -> int:
            return x * self.factor

    task = app.register_task(Multiply())
    assert task.app is app
    assert app.tasks["math.multiply"] is task
    with worker_thread(app):
        assert task.delay(5).get(timeout=TIMEOUT) == 15
        assert app.send_task("math.multiply", (2,)).get(timeout=TIMEOUT) == 6
    with pytest.raises(TypeError):
        task.delay(1, 2)  # run(self, x) checks its arguments at send time too

    class NoRun(Task[Any, Any]):
        pass

    with pytest.raises(ImproperlyConfigured, match="defines run"):
        NoRun()


def test_a_base_overriding_call_wraps_every_run(app: Celeriac) -> None:
    class Wrapped(Task[Any, Any]):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return ("wrapped", self.run(*args, **kwargs))

    @app.task(base=Wrapped)
    def inner(x: int) -> int:
        return x + 1

    with worker_thread(app):
        wrapped: Any = inner.delay(1).get(timeout=TIMEOUT)  # the base's __call__ changed it
        assert wrapped == ["wrapped", 2]


def test_task_cls_as_class_and_as_dotted_path() -> None:
    by_class = memory_app("by-class", task_cls=Recording)

    @by_class.task
    def one() -> None: ...

    assert isinstance(one, Recording)
    by_path = memory_app("by-path", task_cls=f"{__name__}:Recording")

    @by_path.task
    def two() -> None: ...

    assert isinstance(two, Recording)
    with pytest.raises(ImproperlyConfigured, match="task_cls"):
        memory_app("bad", task_cls="no.such.module:Thing")
    with pytest.raises(ImproperlyConfigured, match="Task subclass"):
        memory_app("bad", task_cls=dict)


# -- update_state, logs, headers, shadow, track_started, ignore_result ---------------------------


def test_update_state_with_a_custom_state_reads_as_progress(app: Celeriac) -> None:
    reported = threading.Event()
    release = threading.Event()

    @app.task(bind=True)
    def long(self: Task[[], str]) -> str:
        self.update_state(state="PROGRESS", meta={"done": 3, "total": 10})
        reported.set()
        assert release.wait(TIMEOUT)
        return "done"

    with worker_thread(app):
        result = long.delay()
        assert reported.wait(TIMEOUT)
        assert result.state == "PROGRESS"
        assert result.info == {"done": 3, "total": 10}
        assert not result.ready()
        release.set()
        assert result.get(timeout=TIMEOUT) == "done"
        assert result.state == states.SUCCESS


def test_get_task_logger_names_the_task(app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    logger = get_task_logger("tests.celery_api.tasks")
    assert logger.parent is logging.getLogger("celeriac.task")

    @app.task
    def noisy(x: int) -> int:
        logger.info("adding %s", x)
        return x

    with worker_thread(app), caplog.at_level(logging.INFO, "tests.celery_api.tasks"):
        result = noisy.delay(7)
        result.get(timeout=TIMEOUT)
    (record,) = [r for r in caplog.records if r.name == "tests.celery_api.tasks"]
    assert record.getMessage() == f"{noisy.name}[{result.id}]: adding 7"
    assert record.task_id == result.id  # type: ignore[attr-defined]
    logger.info("outside a task")  # no prefix, no error


def test_custom_headers_are_on_the_request_and_shadow_names_a_send(app: Celeriac) -> None:
    @app.task(bind=True)
    def who(self: Task[[], Any]) -> Any:
        return [self.request.tenant, self.request.get("missing", "dflt"), self.request.shadow]

    with worker_thread(app):
        result = who.apply_async(headers={"tenant": "acme"}, shadow="who-for-acme")
        assert result.get(timeout=TIMEOUT) == ["acme", "dflt", "who-for-acme"]


def test_shadow_name_hook(app: Celeriac) -> None:
    class Named(Task[Any, Any]):
        def shadow_name(self, args: Any, kwargs: Any, options: Any) -> str:
            return f"render:{args[0]}"

    @app.task(base=Named, bind=True)
    def render(self: Task[[str], Any], page: str) -> Any:
        return self.request.headers["shadow"]

    with worker_thread(app):
        assert render.delay("home").get(timeout=TIMEOUT) == "render:home"


def test_track_started_stores_started_with_pid_and_hostname(app: Celeriac) -> None:
    running = threading.Event()
    release = threading.Event()

    @app.task(track_started=True)
    def slow() -> int:
        running.set()
        assert release.wait(TIMEOUT)
        return 1

    with worker_thread(app, hostname="w1@test") as worker:
        result = slow.delay()
        assert running.wait(TIMEOUT)
        app.flush_results()
        assert result.state == states.STARTED
        assert result.info["hostname"] == worker.hostname
        assert isinstance(result.info["pid"], int)
        release.set()
        assert result.get(timeout=TIMEOUT) == 1


def test_ignore_result_get_returns_none_at_once(app: Celeriac) -> None:
    @app.task(ignore_result=True)
    def fire() -> int:
        return 1

    result = fire.delay()  # no worker: a wait would block until the timeout
    assert result.ignored
    assert result.get(timeout=0.01) is None
    assert app.send_task(fire.name, ignore_result=True).get() is None


def test_children_include_link_callbacks(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def double(x: int) -> int:
        return x * 2

    with worker_thread(app):
        result = add.apply_async((2, 3), link=[double.s(), double.s()])
        assert result.get(timeout=TIMEOUT) == 5
        children = result.children
        assert len(children) == 2
        assert [c.get(timeout=TIMEOUT) for c in children] == [10, 10]


def test_app_signature_takes_send_options_as_keywords(app: Celeriac) -> None:
    sig = app.signature("tasks.add", args=(2, 2), countdown=10, queue="math")
    assert sig.task == "tasks.add"
    assert sig.args == (2, 2)
    assert sig.options == {"countdown": 10, "queue": "math"}
    sig2 = app.signature("tasks.add", (1,), {"y": 2}, {"priority": 5})
    assert (sig2.args, sig2.kwargs, sig2.options) == ((1,), {"y": 2}, {"priority": 5})


def test_group_result_restore_by_id_alone(app: Celeriac) -> None:
    app.set_default()

    @app.task
    def one() -> int:
        return 1

    from celeriac import group

    with worker_thread(app):
        saved = group(one.s(), one.s()).apply_async()
        saved.get(timeout=TIMEOUT)
        restored = GroupResult.restore(saved.id)
        assert restored is not None
        assert restored.get(timeout=TIMEOUT) == [1, 1]


# -- the publish signals --------------------------------------------------------------------------


def test_before_and_after_task_publish(app: Celeriac) -> None:
    seen: list[tuple[Any, ...]] = []

    def before(sender: Any = None, headers: Any = None, body: Any = None, **kw: Any) -> None:
        seen.append(("before", sender, body, kw["routing_key"]))
        headers["trace_id"] = "abc123"  # what tracing instrumentation does

    def after(sender: Any = None, headers: Any = None, **kw: Any) -> None:
        seen.append(("after", sender, headers["id"]))

    @app.task(bind=True)
    def traced(self: Task[[int], str], x: int) -> str:
        return str(self.request.trace_id)

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    try:
        with worker_thread(app):
            result = traced.delay(1)
            assert result.get(timeout=TIMEOUT) == "abc123"
            many = app.send_many([(traced.name, (2,), {}), (traced.name, (3,), {})])
            assert [r.get(timeout=TIMEOUT) for r in many] == ["abc123", "abc123"]
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert seen[0] == ("before", traced.name, ((1,), {}, None), "celery")
    assert seen[1] == ("after", traced.name, result.id)
    assert [s[0] for s in seen[2:]] == ["before", "before", "after", "after"]
