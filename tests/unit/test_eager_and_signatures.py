from __future__ import annotations

import pytest

from celeriac import (
    Celeriac,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    Signature,
    Task,
    signature,
    states,
)


def test_apply_runs_here_with_retries(app: Celeriac) -> None:
    @app.task(bind=True, max_retries=3)
    def flaky(self: Task[[int], int], x: int) -> int:
        if self.request.retries < 2:
            raise self.retry(countdown=100)  # eager retries do not wait
        return x * 10

    result = flaky.apply((4,))
    assert result.get() == 40
    assert result.state == states.SUCCESS


def test_apply_failure_keeps_the_original_exception(app: Celeriac) -> None:
    error = ValueError("original")

    @app.task
    def boom() -> None:
        raise error

    result = boom.apply()
    assert result.failed()
    assert result.result is error
    with pytest.raises(ValueError, match="original") as info:
        result.get()
    assert info.value is error


def test_apply_autoretry_exhausts_max_retries(app: Celeriac) -> None:
    """Past max_retries an autoretried task fails with its own error, as in Celery."""

    @app.task(autoretry_for=(OSError,), max_retries=2, retry_backoff=True)
    def down() -> None:
        raise OSError("down")

    result = down.apply()
    with pytest.raises(OSError, match="down"):
        result.get()
    assert result.state == "FAILURE"


def test_retry_with_exc_past_max_retries_reraises_exc(app: Celeriac) -> None:
    """``raise self.retry(exc=exc)`` past max_retries raises ``exc`` (Celery's rule); without
    ``exc`` it raises MaxRetriesExceededError."""
    attempts: list[int] = []

    @app.task(bind=True, max_retries=1)
    def flaky(self: Task[[], None], give_exc: bool) -> None:
        attempts.append(self.request.retries)
        try:
            raise ConnectionError("db down")
        except ConnectionError as exc:
            raise self.retry(exc=exc if give_exc else None, countdown=0) from exc

    with pytest.raises(ConnectionError, match="db down"):
        flaky.apply((True,)).get()
    assert attempts == [0, 1]
    with pytest.raises(MaxRetriesExceededError):
        flaky.apply((False,)).get()


def test_eager_propagates_setting() -> None:
    app = Celeriac("e", broker="memory://ep", task_always_eager=True, task_eager_propagates=True)

    @app.task
    def boom() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        boom.delay()


def test_signature_roundtrip_and_partial_application(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    sig = add.s(2).set(queue="io")
    data = sig.to_dict()
    assert data == {
        "task": add.name,
        "args": [2],
        "kwargs": {},
        "options": {"queue": "io"},
        "immutable": False,
        "subtask_type": None,
        "chord_size": None,
    }
    rebuilt = Signature.from_dict(data, app)
    assert rebuilt == sig
    assert rebuilt.clone((1,)).args == (1, 2)  # Celery prepends the parent's result
    frozen = add.si(1, 1)
    assert frozen.clone((99,)).args == (1, 1)
    assert signature(add.name, (1, 2), app=app).args == (1, 2)
    assert repr(add.s(1, y=2)) == f"{add.name}(1, y=2)"


def test_signature_without_app_uses_the_default_app_or_says_how_to_bind() -> None:
    with pytest.raises(ImproperlyConfigured, match="bound to no app"):
        signature("x.y", (1,)).delay()  # no app exists in this test (conftest resets it)
    app = Celeriac("default", broker="memory://sig-default", task_always_eager=True)

    @app.task(name="x.y")
    def double(x: int) -> int:
        return 2 * x

    assert signature("x.y", (21,)).delay().get() == 42  # Celery's: the default app
    with pytest.raises(ImproperlyConfigured, match="not a signature"):
        Signature.from_dict({"args": []})
