"""A worker closes its database connections around each task as Django does around a request,
so a connection that died between two tasks (a database restart, an idle connection dropped by
the server) does not take the worker down: PostgreSQL backends are really terminated here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connections  # type: ignore[import-untyped]

from celeriac import Celeriac
from celeriac.testing import worker_thread
from celeriac.worker.worker import Worker
from djtests import settings as test_settings
from djtests.conftest import DATABASES
from djtests.shop.tasks import backend_pid, connection_token

#: The PostgreSQL tests, with the database they use (or skipped when it is not there).
ON_POSTGRES = (
    pytest.mark.django_db(transaction=True, databases=["pg"])
    if test_settings.postgres
    else pytest.mark.skip(reason="PostgreSQL is not answering on 127.0.0.1:5432")
)


def _terminate(pid: int) -> bool:
    """What a database restart does to one connection: the server ends it. False when that
    server process had gone already (its connection was closed)."""
    with connections["pg"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        ended: bool = cursor.fetchone()[0]
    return ended


@pytest.fixture(params=[0, None], ids=["conn_max_age=0", "persistent+health_checks"])
def pg_connections(request: pytest.FixtureRequest) -> Iterator[int | None]:
    """The ``pg`` database's CONN_MAX_AGE for the test (``None``: persistent, with Django's
    CONN_HEALTH_CHECKS), changed in the one settings dict every thread's connection reads."""
    max_age: int | None = request.param
    with _pg_settings(max_age, max_age is None):
        yield max_age


@pytest.fixture
def pg_persistent_unchecked() -> Iterator[None]:
    with _pg_settings(None, False):
        yield


@contextlib.contextmanager
def _pg_settings(max_age: int | None, checks: bool) -> Iterator[None]:
    settings = connections["pg"].settings_dict
    before = (settings["CONN_MAX_AGE"], settings["CONN_HEALTH_CHECKS"])
    settings["CONN_MAX_AGE"], settings["CONN_HEALTH_CHECKS"] = max_age, checks
    try:
        yield
    finally:
        settings["CONN_MAX_AGE"], settings["CONN_HEALTH_CHECKS"] = before
        # the stopped worker's threads may still hold a connection: end them, so that the
        # test database can be flushed and dropped
        with connections["pg"].cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture
def one_thread_worker(dj_app: Celeriac) -> Iterator[Worker]:
    """A worker with one pool thread: every task meets the connection the last one left."""
    with worker_thread(dj_app, concurrency=1, pool="threads") as worker:
        yield worker


@pytest.mark.parametrize("alias", DATABASES)
@pytest.mark.usefixtures("one_thread_worker")
def test_each_task_gets_a_new_connection_by_default(alias: str) -> None:
    """CONN_MAX_AGE = 0 (Django's default): the connection is closed after each task."""
    tokens = [connection_token.delay(alias).get(timeout=10) for _ in range(3)]
    assert len(set(tokens)) == 3


@ON_POSTGRES
def test_a_connection_killed_between_tasks_is_replaced(
    pg_connections: int | None, one_thread_worker: Worker
) -> None:
    first = backend_pid.delay("pg").get(timeout=10)
    second = backend_pid.delay("pg").get(timeout=10)
    if pg_connections is None:  # persistent: kept between tasks, until the server ends it
        assert second == first
        assert _terminate(second)
    else:  # closed after each task: nothing is left to end
        assert second != first
        _terminate(second)
    assert backend_pid.delay("pg").get(timeout=10) not in (first, second)


@ON_POSTGRES
@pytest.mark.usefixtures("pg_persistent_unchecked", "one_thread_worker")
def test_without_health_checks_one_task_fails_and_the_next_reconnects() -> None:
    first = backend_pid.delay("pg").get(timeout=10)
    assert _terminate(first)
    with pytest.raises(OperationalError):
        backend_pid.delay("pg").get(timeout=10)
    # the failed task left the connection unusable: closed after it, so the next one connects
    assert backend_pid.delay("pg").get(timeout=10) != first
