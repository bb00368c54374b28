"""One conformance suite for every result backend: what ``celeriac.results.base`` promises.

Every test takes the ``backend`` fixture (or ``make_backend`` when it needs options, or a second
instance on the same store) and runs once per entry of :data:`BACKENDS`.

Factories go through ``celeriac.results.registry.create_backend``, so the URL schemes are
exercised too. To add a backend (Redis, say), write a factory
``(location, **options) -> Backend`` where ``location`` is a per-test ``tmp_path`` to derive a
unique database, key or file from; every call with the same ``location`` must reach the same
store. Then add a :class:`Case` to ``BACKENDS``, with ``marks=(pytest.mark.redis,)`` if it needs
a server, and ``counts_cleanup=False`` if the backend expires records natively (its
``cleanup()`` returns 0).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeriac import states
from celeriac.errors import ContentDisallowed, ImproperlyConfigured, RemoteError, ResultTooLarge
from celeriac.results.base import Backend, ResultMeta, exception_to_dict
from celeriac.results.memory import MemoryBackend, reset_memory_backends
from celeriac.results.registry import backend_class, create_backend
from celeriac.results.sqlite import SQLiteBackend, sqlite_path
from conftest import delete_redis_keys, require_service


class Factory(Protocol):
    def __call__(self, location: Path, **options: Any) -> Backend: ...


def _memory(location: Path, **options: Any) -> Backend:
    backend = create_backend(f"memory://{location.name}", **options)
    assert isinstance(backend, MemoryBackend)
    return backend


def _sqlite(location: Path, **options: Any) -> Backend:
    backend = create_backend(f"sqlite:///{location / 'results.db'}", **options)
    assert isinstance(backend, SQLiteBackend)
    return backend


REDIS_RESULTS_URL = "redis://127.0.0.1:6379/1"


def _redis_prefix(location: Path) -> str:
    """A key prefix of this test's own: every key the test makes starts with it."""
    return f"celeriac-contract:{hashlib.sha1(str(location).encode()).hexdigest()[:16]}:"


def _redis(location: Path, **options: Any) -> Backend:
    from celeriac.results.redis import RedisBackend

    require_service("Redis", 6379)
    options.setdefault("key_prefix", _redis_prefix(location))
    backend = create_backend(REDIS_RESULTS_URL, **options)
    assert isinstance(backend, RedisBackend)
    return backend


def _redis_teardown(location: Path) -> None:
    """Delete this test's keys (SCAN MATCH prefix*), whatever their expiry."""
    delete_redis_keys(REDIS_RESULTS_URL, _redis_prefix(location))


@dataclass(frozen=True)
class Case:
    factory: Factory
    #: False for backends whose store expires records by itself (cleanup() returns 0).
    counts_cleanup: bool = True
    marks: tuple[pytest.MarkDecorator, ...] = ()
    #: Removes what the test left on a shared server; given the test's ``location``.
    teardown: Callable[[Path], None] | None = None


BACKENDS: dict[str, Case] = {
    "memory": Case(_memory),
    "sqlite": Case(_sqlite),
    "redis": Case(
        _redis,
        counts_cleanup=False,
        marks=(pytest.mark.redis,),
        teardown=_redis_teardown,
    ),
}

MakeBackend = Callable[..., Backend]


@pytest.fixture(
    params=[pytest.param(name, marks=case.marks) for name, case in BACKENDS.items()],
)
def case(request: pytest.FixtureRequest) -> Case:
    return BACKENDS[request.param]


@pytest.fixture
def make_backend(case: Case, tmp_path: Path) -> Iterator[MakeBackend]:
    """Creates backends on this test's store; every one is closed at the end of the test."""
    made: list[Backend] = []

    def make(**options: Any) -> Backend:
        backend = case.factory(tmp_path, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()
    reset_memory_backends()
    if case.teardown is not None:
        case.teardown(tmp_path)


@pytest.fixture
def backend(make_backend: MakeBackend) -> Backend:
    return make_backend()


def new_id() -> str:
    return str(uuid.uuid4())


class ContractError(Exception):
    """A task exception whose type lives in an imported (test) module, not in builtins."""


def _with_exception(task_id: str, status: str, exc: BaseException) -> ResultMeta:
    return ResultMeta(task_id=task_id, status=status, result=exception_to_dict(exc))


# -- reading and writing -------------------------------------------------------------------------


def test_unknown_id_is_pending(backend: Backend) -> None:
    task_id = new_id()
    meta = backend.get_meta(task_id)
    assert meta == ResultMeta(task_id=task_id)
    assert meta.status == states.PENDING
    assert not meta.ready


@pytest.mark.parametrize("status", sorted(states.ALL_STATES))
def test_store_and_get_each_state(backend: Backend, status: str) -> None:
    task_id = new_id()
    if status in states.EXCEPTION_STATES:
        result: Any = exception_to_dict(ValueError("why"))
    else:
        result = {"n": 1}
    backend.store(
        ResultMeta(task_id=task_id, status=status, result=result, name="t.add", retries=2)
    )
    meta = backend.get_meta(task_id)
    assert meta.status == status
    assert meta.result == result
    assert meta.name == "t.add"
    assert meta.retries == 2
    assert meta.ready == (status in states.READY_STATES)
    assert (meta.date_done is not None) == meta.ready


def test_store_overwrites(backend: Backend) -> None:
    task_id = new_id()
    backend.store(ResultMeta(task_id=task_id, status=states.STARTED))
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=3))
    assert backend.get_meta(task_id).result == 3


def test_instances_on_one_store_share_results(make_backend: MakeBackend) -> None:
    writer, reader = make_backend(), make_backend()
    task_id = new_id()
    writer.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result="shared"))
    assert reader.get_meta(task_id).result == "shared"


utf8_text = st.text(st.characters(codec="utf-8"))  # no lone surrogates: not valid UTF-8
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | utf8_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(utf8_text, children, max_size=5)
    ),
    max_leaves=20,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_success_round_trips_json_values(backend: Backend, value: Any) -> None:
    task_id = new_id()
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=value))
    assert backend.get_meta(task_id).result == value


# -- exceptions ----------------------------------------------------------------------------------


def test_a_result_over_max_bytes_is_stored_as_a_clear_failure(make_backend: MakeBackend) -> None:
    """``result_max_bytes``: by store, store_many and astore alike, a record too large to
    store becomes the task's FAILURE naming its size; a small one is stored as it is."""
    backend = make_backend(max_bytes=2000)
    big = [ResultMeta(new_id(), states.SUCCESS, "x" * 5000, name="proj.big") for _ in range(3)]
    small = ResultMeta(new_id(), states.SUCCESS, "ok")
    backend.store(big[0])
    backend.store_many([big[1], small])
    asyncio.run(backend.astore(big[2]))
    for meta in big:
        stored = backend.get_meta(meta.task_id)
        assert stored.status == states.FAILURE
        exc = stored.exception()
        assert isinstance(exc, ResultTooLarge), exc
        assert "result_max_bytes (2,000)" in str(exc) and "proj.big" in str(exc)
    assert backend.get_meta(small.task_id).result == "ok"


def test_failure_rebuilds_a_builtin_exception(backend: Backend) -> None:
    task_id = new_id()
    backend.store(_with_exception(task_id, states.FAILURE, ValueError("bad value", 3)))
    exc = backend.get_meta(task_id).exception()
    assert type(exc) is ValueError
    assert exc.args == ("bad value", 3)


def test_failure_rebuilds_an_exception_from_an_imported_module(backend: Backend) -> None:
    task_id = new_id()
    backend.store(_with_exception(task_id, states.FAILURE, ContractError("own type")))
    exc = backend.get_meta(task_id).exception()
    assert type(exc) is ContractError
    assert exc.args == ("own type",)


def test_failure_from_an_unknown_module_is_a_remote_error(backend: Backend) -> None:
    task_id = new_id()
    stored = {"exc_type": "Boom", "exc_module": "no.such.module", "exc_message": ["kaput"]}
    backend.store(ResultMeta(task_id=task_id, status=states.FAILURE, result=stored))
    exc = backend.get_meta(task_id).exception()
    assert isinstance(exc, RemoteError)
    assert (exc.exc_type, exc.exc_module, exc.exc_message) == ("Boom", "no.such.module", "kaput")


def test_success_has_no_exception(backend: Backend) -> None:
    task_id = new_id()
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result={"exc_type": "x"}))
    assert backend.get_meta(task_id).exception() is None


# -- waiting -------------------------------------------------------------------------------------


def test_wait_for_returns_at_once_when_ready(backend: Backend) -> None:
    task_id = new_id()
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=1))
    started = time.monotonic()
    meta = backend.wait_for(task_id, timeout=30)
    assert meta.status == states.SUCCESS
    assert time.monotonic() - started < 10  # far below the timeout: it did not wait it out


def test_wait_for_wakes_when_another_thread_stores(make_backend: MakeBackend) -> None:
    waiter_side, writer_side = make_backend(), make_backend()
    task_id = new_id()
    writer_side.store(ResultMeta(task_id=task_id, status=states.STARTED))
    entered, done = threading.Event(), threading.Event()
    outcome: list[ResultMeta] = []

    def wait() -> None:
        entered.set()
        outcome.append(waiter_side.wait_for(task_id, timeout=60))
        done.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    try:
        assert entered.wait(10)
        # Not ready yet, so the waiter must still be waiting (it would return STARTED otherwise).
        assert not done.wait(0.05)
        writer_side.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result="woke"))
        assert done.wait(30), "wait_for did not wake when the result was stored"
    finally:
        thread.join(60)
    assert outcome[0].status == states.SUCCESS
    assert outcome[0].result == "woke"


def test_wait_for_times_out_with_pending(backend: Backend) -> None:
    task_id = new_id()
    meta = backend.wait_for(task_id, timeout=0.05)
    assert meta == ResultMeta(task_id=task_id)


def test_wait_for_times_out_with_the_latest_state(backend: Backend) -> None:
    task_id = new_id()
    backend.store(ResultMeta(task_id=task_id, status=states.STARTED, worker="w1"))
    meta = backend.wait_for(task_id, timeout=0.05)
    assert meta.status == states.STARTED
    assert meta.worker == "w1"


def test_wait_for_zero_timeout_does_not_block(backend: Backend) -> None:
    assert backend.wait_for(new_id(), timeout=0).status == states.PENDING


# -- forgetting and expiry -----------------------------------------------------------------------


def test_forget(backend: Backend) -> None:
    task_id = new_id()
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=1))
    backend.forget(task_id)
    assert backend.get_meta(task_id).status == states.PENDING
    backend.forget(task_id)  # forgetting twice, or an unknown id, is not an error
    backend.forget(new_id())


def test_expired_records_read_as_absent(make_backend: MakeBackend) -> None:
    expired = make_backend(expires=-1.0)
    task_id = new_id()
    expired.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=1))
    assert expired.get_meta(task_id).status == states.PENDING
    assert expired.wait_for(task_id, timeout=0.01).status == states.PENDING


def test_expired_counter_restarts(make_backend: MakeBackend) -> None:
    expired = make_backend(expires=-1.0)
    assert expired.incr("chord-x") == 1
    assert expired.incr("chord-x") == 1


def test_cleanup_removes_only_expired(make_backend: MakeBackend, case: Case) -> None:
    expired, lasting = make_backend(expires=-1.0), make_backend(expires=None)
    for _ in range(3):
        expired.store(ResultMeta(task_id=new_id(), status=states.SUCCESS))
    expired.incr("old-counter")
    keep = new_id()
    lasting.store(ResultMeta(task_id=keep, status=states.SUCCESS, result="kept"))
    lasting.incr("live-counter", 5)

    assert expired.cleanup() == (4 if case.counts_cleanup else 0)
    assert expired.cleanup() == 0
    assert lasting.get_meta(keep).result == "kept"
    assert lasting.incr("live-counter", 0) == 5


def test_unexpired_records_survive(make_backend: MakeBackend) -> None:
    backend = make_backend(expires=3600.0)
    task_id = new_id()
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=1))
    assert backend.cleanup() == 0
    assert backend.get_meta(task_id).result == 1


# -- counters ------------------------------------------------------------------------------------


def test_incr_counts(backend: Backend) -> None:
    assert backend.incr("c") == 1
    assert backend.incr("c", 4) == 5
    assert backend.incr("c", -2) == 3
    assert backend.incr("other") == 1


def test_incr_is_atomic_under_threads(backend: Backend) -> None:
    threads, per_thread = 8, 200
    barrier = threading.Barrier(threads)
    seen: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait(30)
            seen[i].extend(backend.incr("chord-counter") for _ in range(per_thread))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not errors
    total = threads * per_thread
    assert backend.incr("chord-counter", 0) == total
    # Every increment saw a distinct value: no two threads read the same old value.
    assert sorted(v for values in seen for v in values) == list(range(1, total + 1))


# -- async twins ---------------------------------------------------------------------------------


def test_group_ids_are_saved_and_restored_in_order(backend: Backend) -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    assert backend.restore_group("g1") is None
    backend.save_group("g1", ids)
    assert backend.restore_group("g1") == ids
    assert backend.get_meta(ids[0]).status == states.PENDING  # no task record is made
    backend.delete_group("g1")
    assert backend.restore_group("g1") is None


def test_join_chord_counts_each_member_once(backend: Backend) -> None:
    assert backend.join_chord("chord-a", "m1") == (True, 1)
    assert backend.join_chord("chord-a", "m1") == (False, 1)  # the same member: redelivered
    assert backend.join_chord("chord-a", "m2") == (True, 2)
    assert backend.join_chord("chord-b", "m1") == (True, 1)  # another chord counts on its own


def test_join_chord_lets_exactly_one_member_complete_it(backend: Backend) -> None:
    """Members finishing (and re-finishing) at once from many threads: one sees the size."""
    members, threads = 50, 8
    barrier = threading.Barrier(threads)
    counts: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait(30)
        for m in range(members):  # every thread reports every member: 8 deliveries each
            added, count = backend.join_chord("chord-race", f"m{m}")
            if added:
                with lock:
                    counts.append(count)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert sorted(counts) == list(range(1, members + 1))  # each member counted once
    assert counts.count(members) == 1


def test_get_many_keeps_the_order(backend: Backend) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    backend.store(ResultMeta(ids[0], states.SUCCESS, 1))
    backend.store(ResultMeta(ids[2], states.FAILURE, exception_to_dict(ValueError("x"))))
    metas = backend.get_many(ids)
    assert [m.task_id for m in metas] == ids
    assert [m.status for m in metas] == [states.SUCCESS, states.PENDING, states.FAILURE]


def test_async_twins(backend: Backend) -> None:
    async def scenario() -> tuple[ResultMeta, ResultMeta, ResultMeta]:
        task_id = new_id()
        await backend.astore(ResultMeta(task_id=task_id, status=states.SUCCESS, result=[1, 2]))
        got = await backend.aget_meta(task_id)
        waited = await backend.await_for(task_id, timeout=30)
        missing = await backend.await_for(new_id(), timeout=0.05)
        return got, waited, missing

    got, waited, missing = asyncio.run(scenario())
    assert got.result == [1, 2]
    assert waited.status == states.SUCCESS
    assert missing.status == states.PENDING


def test_await_for_wakes_on_a_store(make_backend: MakeBackend) -> None:
    waiter_side, writer_side = make_backend(), make_backend()
    task_id = new_id()

    async def scenario() -> ResultMeta:
        waiting = asyncio.create_task(waiter_side.await_for(task_id, timeout=60))
        await asyncio.sleep(0.01)
        await writer_side.astore(ResultMeta(task_id=task_id, status=states.SUCCESS, result=7))
        return await asyncio.wait_for(waiting, 30)

    meta = asyncio.run(scenario())
    assert (meta.status, meta.result) == (states.SUCCESS, 7)


def test_cancelled_await_for_does_not_hold_up_the_event_loop(backend: Backend) -> None:
    """A cancelled ``await_for`` with no timeout must not leave a thread blocked for ever."""

    async def scenario() -> None:
        waiting = asyncio.create_task(backend.await_for(new_id(), timeout=None))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    runner = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "asyncio.run did not return: a waiter thread is stuck"


# -- serializers and accept ----------------------------------------------------------------------


def test_msgpack_round_trip(make_backend: MakeBackend) -> None:
    backend = make_backend(serializer="msgpack", accept=("msgpack",))
    task_id = new_id()
    value = {"bytes": b"\x00\xff", "list": [1, 2.5, "three", None, True]}
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=value))
    meta = backend.get_meta(task_id)
    assert meta.status == states.SUCCESS
    assert meta.result == value
    assert backend.wait_for(task_id, timeout=5).result == value


def test_accept_refuses_a_stored_content_type(make_backend: MakeBackend) -> None:
    writer = make_backend(serializer="msgpack", accept=("msgpack",))
    reader = make_backend(serializer="json", accept=("json",))
    task_id = new_id()
    writer.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result=1))
    with pytest.raises(ContentDisallowed):
        reader.get_meta(task_id)
    with pytest.raises(ContentDisallowed):
        reader.wait_for(task_id, timeout=1)


# -- not per backend: the registry and the built-ins' URLs -----------------------------------------


def test_registry_knows_the_aliases() -> None:
    assert backend_class("cache+memory://") is MemoryBackend
    assert backend_class("db+sqlite:///x.db") is SQLiteBackend


def test_registry_refuses_an_unknown_scheme_without_leaking_the_password() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        create_backend("mongodb://user:hunter2@db.example/0")
    message = str(info.value)
    assert "hunter2" not in message
    assert "mongodb" in message
    assert "sqlite" in message  # names the schemes it does know


def test_cache_memory_and_memory_share_one_store() -> None:
    try:
        writer = create_backend("cache+memory://shared-alias")
        reader = create_backend("memory://shared-alias")
        writer.store(ResultMeta(task_id="x", status=states.SUCCESS, result=1))
        assert reader.get_meta("x").result == 1
        reset_memory_backends()
        assert create_backend("memory://shared-alias").get_meta("x").status == states.PENDING
    finally:
        reset_memory_backends()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:////abs/dir/r.db", "/abs/dir/r.db"),
        ("db+sqlite:///rel/r.db", "rel/r.db"),
        ("sqlite:///r.db?busy_timeout=100", "r.db"),
    ],
)
def test_sqlite_paths(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "redis://x", "sqlite:///r.db?nonsense=1"]
)
def test_sqlite_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ImproperlyConfigured):
        SQLiteBackend(url)


def test_sqlite_busy_timeout_option(tmp_path: Path) -> None:
    by_query = SQLiteBackend(f"sqlite:///{tmp_path / 'q.db'}?busy_timeout=250")
    by_keyword = SQLiteBackend(f"sqlite:///{tmp_path / 'k.db'}", busy_timeout=750)
    try:
        assert (by_query.busy_timeout, by_keyword.busy_timeout) == (250, 750)
        assert by_query.incr("c") == 1  # and the connection opens with it
    finally:
        by_query.close()
        by_keyword.close()
