"""``django-db://``: results stored in the project's database by a real worker and read back,
on SQLite and PostgreSQL; the backend's own operations (expiry, counters, chords); and the
scheme's registration."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connections  # type: ignore[import-untyped]

from celeriac import Celeriac, chord, states
from celeriac.contrib.django.results.backend import DjangoBackend, database_alias
from celeriac.contrib.django.results.models import ResultCounter, TaskResult
from celeriac.errors import ImproperlyConfigured
from celeriac.results import registry
from celeriac.results.base import ResultMeta
from celeriac.testing import worker_thread
from djtests import settings as test_settings
from djtests.conftest import DATABASES, django_app
from djtests.shop.tasks import add, refuse, total


def test_celeriac_knows_the_django_db_scheme() -> None:
    assert registry.backend_class("django-db://") is DjangoBackend


@pytest.fixture
def results_app(alias: str) -> Iterator[Celeriac]:
    """Results in the ``alias`` database, with the task's name and worker (result_extended)."""
    app = django_app(result_backend=f"django-db://{alias}", result_extended=True)
    yield app
    app.close()


@pytest.fixture
def backend(results_app: Celeriac) -> DjangoBackend:
    found = results_app.backend
    assert isinstance(found, DjangoBackend)
    return found


@pytest.mark.parametrize("alias", DATABASES)
def test_a_worker_stores_results_in_the_django_database(alias: str, results_app: Celeriac) -> None:
    with worker_thread(results_app, concurrency=2, pool="threads"):
        assert add.delay(2, 3).get(timeout=10) == 5
        failed = refuse.delay("out of stock")
        with pytest.raises(ValueError, match="out of stock"):
            failed.get(timeout=10)
        both = chord([add.s(1, 1), add.s(2, 2)], total.s()).delay()
        assert both.get(timeout=10) == 6
    rows = TaskResult.objects.using(alias)
    done = rows.get(task_name="shop.total")
    assert (done.status, done.result) == (states.SUCCESS, "6")
    assert done.date_done is not None and done.worker
    refused = rows.get(task_id=failed.id)
    assert refused.status == states.FAILURE
    assert "ValueError" in refused.traceback
    assert "out of stock" in refused.result
    # read back by another app (a web process) from the same table
    reader = django_app(result_backend=f"django-db://{alias}")
    assert reader.AsyncResult(done.task_id).get(timeout=1) == 6
    assert reader.AsyncResult(failed.id).state == states.FAILURE
    reader.close()


@pytest.mark.parametrize("alias", DATABASES)
def test_store_read_forget_and_expiry(alias: str, backend: DjangoBackend) -> None:
    backend.store(ResultMeta("t1", states.SUCCESS, {"ok": [1, 2]}, name="shop.add"))
    backend.store(ResultMeta("t1", states.SUCCESS, {"ok": [3]}, name="shop.add"))  # upsert
    assert backend.get_meta("t1").result == {"ok": [3]}
    assert backend.wait_for("t1", timeout=1).ready
    assert backend.get_meta("missing").status == states.PENDING
    backend.store_many([ResultMeta(f"m{i}", states.SUCCESS, i) for i in range(5)])
    assert [m.result for m in backend.get_many([f"m{i}" for i in range(5)])] == list(range(5))
    backend.forget("t1")
    assert backend.get_meta("t1").status == states.PENDING
    backend.expires = 0.05
    backend.store(ResultMeta("short", states.SUCCESS, 1))
    backend.incr("short-counter")
    deadline = time.monotonic() + 5
    while backend.get_meta("short").status != states.PENDING:  # expired: reads as absent
        assert time.monotonic() < deadline
        time.sleep(0.02)
    removed = 0
    while removed < 2:  # the result row, then the counter's (incremented a moment later)
        removed += backend.cleanup()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert removed == 2
    assert not TaskResult.objects.using(alias).filter(task_id="short").exists()


@pytest.mark.parametrize("alias", DATABASES)
def test_counters_and_chord_joins_count_each_member_once(
    alias: str, backend: DjangoBackend
) -> None:
    assert [backend.incr("c") for _ in range(3)] == [1, 2, 3]
    assert backend.incr("c", 5) == 8
    joins: list[tuple[bool, int]] = []
    lock = threading.Lock()

    def join(member: str) -> None:
        found = backend.join_chord("g1", member)
        with lock:
            joins.append(found)
        connections[alias].close()

    threads = [threading.Thread(target=join, args=(f"m{i % 4}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(added for added, _ in joins) == 4  # each member counted once
    assert sorted(count for added, count in joins if added) == [1, 2, 3, 4]
    value = ResultCounter.objects.using(alias).get(key="chord-count:g1").value
    assert value == 4


@pytest.mark.parametrize("alias", DATABASES)
def test_groups_are_saved_and_restored(alias: str, backend: DjangoBackend) -> None:
    backend.save_group("g", ["a", "b", "c"])
    assert backend.restore_group("g") == ["a", "b", "c"]
    backend.delete_group("g")
    assert backend.restore_group("g") is None


@pytest.mark.skipif(not test_settings.postgres, reason="PostgreSQL is not answering")
@pytest.mark.django_db(transaction=True, databases=["pg"])
def test_a_read_on_a_connection_killed_under_it_is_run_again() -> None:
    import psycopg

    app = django_app(result_backend="django-db://pg")
    backend = app.backend
    assert backend is not None
    conn = connections["pg"]
    max_age = conn.settings_dict["CONN_MAX_AGE"]
    conn.close()  # its next connection is persistent: it outlives each read
    conn.settings_dict["CONN_MAX_AGE"] = None
    try:
        backend.store(ResultMeta("kept", states.SUCCESS, 7))
        pid = conn.connection.info.backend_pid
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres") as other:
            ended = other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()
        assert ended == (True,)
        assert backend.get_meta("kept").result == 7  # on a new connection
        assert conn.connection.info.backend_pid != pid
    finally:
        conn.settings_dict["CONN_MAX_AGE"] = max_age
        app.close()


def test_urls_name_a_database() -> None:
    assert database_alias("django-db://") == "default"
    assert database_alias("django-db://pg") == "pg"
    assert database_alias("django-db:///pg/") == "pg"
    with pytest.raises(ImproperlyConfigured, match="django-db://<alias>"):
        database_alias("django-db://a/b")
    with pytest.raises(ImproperlyConfigured, match="not a django-db:// URL"):
        database_alias("sqlite:///x.db")


def test_a_database_that_is_not_configured_fails_naming_it() -> None:
    backend = DjangoBackend("django-db://nowhere")
    with pytest.raises(ImproperlyConfigured, match="no database 'nowhere' in DATABASES"):
        backend.get_meta("x")


def test_unknown_options_fail_naming_them() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown option.*busy_timeout"):
        DjangoBackend("django-db://", busy_timeout=5)
