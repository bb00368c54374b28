"""``result_max_bytes``: a task whose return value is too large to store fails clearly, run by a
real worker loop; the caller's ``get()`` raises ResultTooLarge instead of the store wedging."""

from __future__ import annotations

import pytest

from celeriac import ResultTooLarge, states
from celeriac.testing import memory_app, worker_thread


def test_a_too_large_result_fails_the_task_with_its_size() -> None:
    app = memory_app("max-bytes", result_max_bytes=10_000)

    @app.task(name="mb.blob")
    def blob(size: int) -> str:
        return "x" * size

    try:
        with worker_thread(app):
            assert blob.delay(100).get(timeout=10) == "x" * 100
            big = blob.delay(50_000)
            with pytest.raises(ResultTooLarge, match=r"result_max_bytes \(10,000\)"):
                big.get(timeout=10)
            assert big.state == states.FAILURE
    finally:
        app.close()


def test_the_setting_is_checked_and_may_be_turned_off() -> None:
    assert memory_app("unbounded", result_max_bytes=None).conf.result_max_bytes is None
    with pytest.raises(Exception, match="result_max_bytes"):
        memory_app("wrong", result_max_bytes="big")
