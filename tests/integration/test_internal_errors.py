"""A message that meets an error of the worker's own is neither looped for ever nor lost.

The worker's handling of one message can fail in code that is not the task's: a bug of ours, a
custom request class or pool. Such a message used to be requeued at once, every time; and since
a requeue by a living worker does not count toward ``max_deliveries``, it would loop for ever.
Now it comes back a little later each time and, at its third internal error in the worker,
goes to the dead-letter queue with the error as its reason, while the worker runs the rest.

The internal error is made by replacing the consumer's request builder for one task name (the
one place this test reaches inside); the broker (SQLite) and the worker (in a thread) are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from worker_harness import dead_letters, wait_until

from celeriac import Celeriac
from celeriac.testing import worker_thread
from celeriac.worker import consumer
from celeriac.worker.request import build_request

TIMEOUT = 20.0


def test_a_message_meeting_internal_errors_is_dead_lettered_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    app = Celeriac("internal", broker=url, backend=url)
    built: list[str] = []
    real_build = build_request

    def build(message: Any, *args: Any) -> Any:
        if message.task == "internal.broken":
            built.append(message.id)
            raise RuntimeError("a bug in the worker")
        return real_build(message, *args)

    monkeypatch.setattr("celeriac.worker.consumer.build_request", build)
    monkeypatch.setattr(consumer, "INTERNAL_ERROR_BACKOFF", 0.05)

    @app.task(name="internal.broken")
    def broken() -> None:
        raise AssertionError("never runs")

    @app.task(name="internal.ok")
    def ok(n: int) -> int:
        return n

    try:
        with worker_thread(app, concurrency=2):
            bad = broken.delay()
            before = [ok.delay(n) for n in range(5)]
            assert [r.get(timeout=TIMEOUT) for r in before] == list(range(5))
            wait_until(lambda: dead_letters(app, "celery") != [], TIMEOUT, "the dead letter")
            [letter] = dead_letters(app, "celery")
            assert letter.reason.startswith("internal error 3 times while handling it")
            assert "a bug in the worker" in letter.reason
            assert built == [bad.id] * consumer.INTERNAL_ERROR_LIMIT
            assert ok.delay(7).get(timeout=TIMEOUT) == 7  # the worker goes on
    finally:
        app.close()
