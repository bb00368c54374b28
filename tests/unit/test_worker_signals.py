"""The worker sends Celery's signals at the right moments, with the right arguments."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from celeriac import Celeriac, Task, signals
from celeriac.testing import worker_thread


def test_task_and_worker_signals(app: Celeriac) -> None:
    events: list[tuple[str, Any]] = []
    lock = threading.Lock()
    unknown = threading.Event()

    def record(name: str) -> Any:
        def receiver(sender: Any = None, **kwargs: Any) -> None:
            with lock:
                events.append((name, kwargs))
            if name == "unknown":
                unknown.set()

        return receiver

    receivers = {
        name: record(name)
        for name in (
            "init",
            "ready",
            "shutdown",
            "prerun",
            "postrun",
            "success",
            "failure",
            "retry",
            "revoked",
            "unknown",
        )
    }
    pairs = [
        (signals.worker_init, "init"),
        (signals.worker_ready, "ready"),
        (signals.worker_shutdown, "shutdown"),
        (signals.task_prerun, "prerun"),
        (signals.task_postrun, "postrun"),
        (signals.task_success, "success"),
        (signals.task_failure, "failure"),
        (signals.task_retry, "retry"),
        (signals.task_revoked, "revoked"),
        (signals.task_unknown, "unknown"),
    ]
    for signal, name in pairs:
        signal.connect(receivers[name])

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def boom() -> None:
        raise ValueError("boom")

    @app.task(bind=True, max_retries=1)
    def again(self: Task[[], str]) -> str:
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return "second"

    try:
        with worker_thread(app):
            assert add.delay(2, 3).get(timeout=10) == 5
            with pytest.raises(ValueError, match="boom"):
                boom.delay().get(timeout=10)
            assert again.delay().get(timeout=10) == "second"
            app.send_task("no.such.task")
            expired = add.apply_async((1, 1), expires=-1)
            with pytest.raises(Exception, match="expired"):
                expired.get(timeout=10)
            assert unknown.wait(10)
    finally:
        for signal, name in pairs:
            signal.disconnect(receivers[name])

    names = [name for name, _ in events]
    assert names[:2] == ["init", "ready"]
    assert names[-1] == "shutdown"
    success = [kw for name, kw in events if name == "success"]
    assert {kw["result"] for kw in success} == {5, "second"}
    [failure] = [kw for name, kw in events if name == "failure"]
    assert isinstance(failure["exception"], ValueError)
    assert "ValueError" in str(failure["einfo"])  # an ExceptionInfo, as Celery's
    assert len([n for n in names if n == "retry"]) == 1
    assert names.count("prerun") == names.count("postrun") == 4
    [revoked] = [kw for name, kw in events if name == "revoked"]
    assert revoked["expired"] is True
    [unknown_task] = [kw for name, kw in events if name == "unknown"]
    assert unknown_task["name"] == "no.such.task"
