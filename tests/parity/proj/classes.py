"""Task classes of Celery's "Tasks" guide: "Task inheritance" (``base=``), "Handlers", "Per task
usage" of a base class that caches a resource, and a class-based task.

The guide's hooks print; these report to the test process (see :mod:`proj.events`).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import celeriac
from celeriac import Task
from proj import events
from proj.celery import app


class MyTask(celeriac.Task):  # type: ignore[type-arg]
    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        print(f"{task_id!r} failed: {exc!r}")
        events.record(task_id, "on_failure", exc=repr(exc), args=list(args), einfo=str(einfo))


@app.task(base=MyTask)
def add_fails(x: int, y: int) -> int:
    raise KeyError()


class Hooked(Task):  # type: ignore[type-arg]
    """Every handler of the guide's "Handlers" list, each reporting that it ran."""

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        events.record(task_id, "before_start", args=list(args))

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        events.record(task_id, "on_success", retval=retval)

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        events.record(task_id, "on_retry", exc=repr(exc))

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        events.record(task_id, "on_failure", exc=repr(exc), einfo=str(einfo))

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        events.record(task_id, "after_return", status=status, retval=repr(retval))


@app.task(base=Hooked, bind=True, default_retry_delay=0)
def hooked(self: Task[[str, int], int], key: str, failures: int) -> int:
    """Fails ``failures`` times then succeeds; a negative count fails for good."""
    attempt = events.attempt(key)
    if failures < 0:
        raise ValueError("for good")
    if attempt <= failures:
        raise self.retry(exc=RuntimeError(f"attempt {attempt}"))
    return attempt


class Database:
    """The guide's ``Database.connect()``: a connection made once per process."""

    made = itertools.count(1)

    def __init__(self) -> None:
        self.number = next(self.made)


class DatabaseTask(Task):  # type: ignore[type-arg]
    _db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database()
        return self._db


@app.task(base=DatabaseTask)
def process_rows() -> list[int]:
    """The guide iterates ``process_rows.db.table``; this one says which connection it used."""
    db: Database = process_rows.db  # type: ignore[attr-defined]
    return [os.getpid(), db.number]


class AuthenticateServer(Task):  # type: ignore[type-arg]
    """The guide's ``NaiveAuthenticateServer`` ("Instantiation"), calling ``super().__init__()``:
    the guide's own form, without that call, is the xfail test in ``test_parity_tasks``."""

    def __init__(self) -> None:
        super().__init__()
        self.users = {"george": "password"}

    def run(self, username: str, password: str) -> bool:
        try:
            return self.users[username] == password
        except KeyError:
            return False


authenticate = app.register_task(AuthenticateServer())
