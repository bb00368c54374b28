"""One conformance suite for beat's stores: what :mod:`celeriac.beat.store` promises.

Every test takes ``make_store`` and runs once per entry of :data:`STORES` (memory, SQLite,
Redis), each on a namespace private to the test (a memory URL, a database file, a key prefix).
The lease is tested with real time only where its ttl is the thing tested, with ttls of 0.3 s;
everything else waits on events. Contention runs between separate store instances, from
threads (each with its own loop, as beats embedded in threads would) and, for the stores that
cross processes, from child processes released by one starting gun.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from racers import race
from test_transport_contract import run_async

from celeriac.beat.memory_store import MemoryBeatStore
from celeriac.beat.sqlite_store import SQLiteBeatStore
from celeriac.beat.store import BeatStore
from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.transports.memory import reset_memory_brokers
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/15"
TTL = 0.3  # the short lease of the tests that wait for an expiry
#: The lease of the test that renews it: long against one ``lead()`` call on a loaded machine
#: (the holder renews only between the other's calls; with 0.3 s a slow call let it lapse).
RENEWED_TTL = 1.0


StoreClass = Callable[[str, Mapping[str, Any] | None], BeatStore]


@dataclass(frozen=True)
class Where:
    """One test's private namespace on one kind of broker: what a child process needs too
    (``spec``, the store class as ``module:name``, is how a child finds it)."""

    cls: StoreClass
    spec: str
    url: str
    options: dict[str, Any]


def _where(cls: type[BeatStore], url: str, options: dict[str, Any]) -> Where:
    return Where(cls, f"{cls.__module__}:{cls.__qualname__}", url, options)


@dataclass(frozen=True)
class Case:
    """How to place one store kind for the suite, and whether it crosses processes."""

    where: Callable[[Path, str], Where]
    cleanup: Callable[[Where], None] | None = None
    processes: bool = True


def _memory(tmp_path: Path, name: str) -> Where:
    return _where(MemoryBeatStore, f"memory://{name}", {})


def _sqlite(tmp_path: Path, name: str) -> Where:
    return _where(SQLiteBeatStore, f"sqlite:///{tmp_path / name}.db", {"busy_timeout": 10000})


def _redis(tmp_path: Path, name: str) -> Where:
    require_service("Redis", 6379)
    from celeriac.beat.redis_store import RedisBeatStore

    return _where(RedisBeatStore, REDIS_URL, {"key_prefix": f"celeriac-test:{name}:"})


def _clean_redis(where: Where) -> None:
    delete_redis_keys(where.url, where.options["key_prefix"])


def _amqp(tmp_path: Path, name: str) -> Where:
    require_service("RabbitMQ", 5672)
    from amqp_broker import URL, ensure_vhost  # tests/amqp_broker.py
    from celeriac.beat.amqp_store import AmqpBeatStore

    ensure_vhost()
    return _where(AmqpBeatStore, URL, {"beat_queue_prefix": f"celeriac-test.{name}"})


def _clean_amqp(where: Where) -> None:
    from amqp_broker import delete
    from celeriac.beat.amqp_queues import BeatQueues

    delete(BeatQueues(where.options["beat_queue_prefix"]).arguments())


STORES: dict[str, Case] = {
    "memory": Case(_memory, processes=False),  # one process's state, by design
    "sqlite": Case(_sqlite),
    "redis": Case(_redis, _clean_redis),
    "amqp": Case(_amqp, _clean_amqp),
}
MARKS = {"redis": (pytest.mark.redis,), "amqp": (pytest.mark.amqp,)}


@pytest.fixture(params=[pytest.param(n, marks=MARKS.get(n, ())) for n in STORES])
def case(request: pytest.FixtureRequest) -> Case:
    return STORES[str(request.param)]


@pytest.fixture
def where(case: Case, tmp_path: Path) -> Iterator[Where]:
    """This test's namespace; emptied afterwards."""
    place = case.where(tmp_path, f"b{uuid.uuid4().hex[:12]}")
    yield place
    reset_memory_brokers()
    if case.cleanup is not None:
        case.cleanup(place)


@contextlib.asynccontextmanager
async def stores(where: Where, count: int) -> AsyncIterator[list[BeatStore]]:
    """``count`` separate, opened stores on ``where`` (as ``count`` beats have), closed after."""
    made = [where.cls(where.url, where.options) for _ in range(count)]
    try:
        for store in made:
            await store.open()
        yield made
    finally:
        for store in made:
            await store.close()


async def sleep_until(deadline: float) -> None:
    """Wait for a lease's ttl to pass: the one wait on real time these tests make."""
    await asyncio.sleep(max(deadline - time.monotonic(), 0.0))


# -- the lease ---------------------------------------------------------------------------------
@run_async
async def test_one_node_leads_and_renewing_keeps_the_lease(where: Where) -> None:
    async with stores(where, 2) as (a, b):
        assert await a.lead("a", RENEWED_TTL)
        assert not await b.lead("b", RENEWED_TTL)
        # renewed every ttl/6 for three ttls: the other never gets it
        end = time.monotonic() + 3 * RENEWED_TTL
        while time.monotonic() < end:
            assert await a.lead("a", RENEWED_TTL)
            assert not await b.lead("b", RENEWED_TTL)
            await asyncio.sleep(RENEWED_TTL / 6)


@run_async
async def test_an_unrenewed_lease_goes_to_another_after_its_ttl(where: Where) -> None:
    async with stores(where, 2) as (a, b):
        taken = time.monotonic()
        assert await a.lead("a", TTL)
        assert not await b.lead("b", TTL)
        await sleep_until(taken + TTL + 0.05)
        assert await b.lead("b", TTL)
        assert not await a.lead("a", TTL)  # the old leader learns it lost on its next renewal


@run_async
async def test_resign_frees_the_lease_at_once(where: Where) -> None:
    async with stores(where, 2) as (a, b):
        assert await a.lead("a", 60)
        await b.resign("b")  # not the holder: changes nothing
        assert not await b.lead("b", 60)
        await a.resign("a")
        assert await b.lead("b", 60)
        await a.resign("a")  # no longer the holder: changes nothing
        assert not await a.lead("a", 60)


def test_threads_contending_for_the_lease_one_wins(where: Where) -> None:
    """Six beats in six threads (own stores, own loops) ask for the lease at once."""
    gun = threading.Barrier(6)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def beat(node: str) -> None:
        async def run() -> None:
            async with stores(where, 1) as (store,):
                gun.wait(10)
                results[node] = await store.lead(node, 60)

        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=beat, args=(f"n{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results) == 6
    assert sum(results.values()) == 1


# -- entries and runs --------------------------------------------------------------------------
ENTRY = {
    "task": "proj.tasks.report",
    "schedule": {"kind": "crontab", "minute": "*/15", "hour": "9-17"},
    "args": [1, "two", None, 3.5],
    "kwargs": {"ünïcode": "✓", "nested": {"a": [True, False]}},
    "options": {"queue": "reports", "priority": 5},
}


@run_async
async def test_entries_put_delete_and_the_version_changes(where: Where) -> None:
    async with stores(where, 2) as (a, b):
        assert await a.entries() == {}
        seen = {await a.version()}
        await a.put_entries({"report": ENTRY, "ping": {"task": "ping", "schedule": 30.0}})
        assert await b.version() not in seen  # another beat sees the change
        seen.add(await b.version())
        assert await b.entries() == {"report": ENTRY, "ping": {"task": "ping", "schedule": 30.0}}
        await b.put_entries({"ping": {"task": "ping", "schedule": 60.0}})  # replaced
        assert await a.version() not in seen
        seen.add(await a.version())
        assert (await a.entries())["ping"] == {"task": "ping", "schedule": 60.0}
        await a.record_runs({"report": 1000.0, "ping": 2000.0})
        await b.delete_entries(["ping"])
        assert await a.version() not in seen
        assert await a.entries() == {"report": ENTRY}
        assert await a.runs() == {"report": 1000.0}  # its run record went with it


@run_async
async def test_what_is_read_is_a_copy(where: Where) -> None:
    async with stores(where, 1) as (a,):
        await a.put_entries({"report": ENTRY})
        read = await a.entries()
        read["report"]["args"].append("changed")
        assert await a.entries() == {"report": ENTRY}


@run_async
async def test_runs_are_recorded_and_read_back(where: Where) -> None:
    async with stores(where, 2) as (a, b):
        assert await b.runs() == {}
        slot = 1_767_225_600.123456  # sub-second precision survives
        await a.record_runs({"report": slot, "ping": slot + 30})
        assert await b.runs() == {"report": slot, "ping": slot + 30}
        await b.record_runs({"ping": slot + 60})
        assert await a.runs() == {"report": slot, "ping": slot + 60}
        # a late record of an earlier slot (a paused old leader) does not move it back
        await a.record_runs({"ping": slot + 30})
        assert (await a.runs())["ping"] == slot + 60


def test_threads_writing_at_once_lose_nothing(where: Where) -> None:
    """Four writers in four threads put 25 entries each, one call per entry, and record runs."""
    gun = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        async def run() -> None:
            async with stores(where, 1) as (store,):
                gun.wait(10)
                for i in range(25):
                    await store.put_entries({f"w{n}-{i}": {"task": "t", "n": i}})
                    await store.record_runs({f"w{n}-{i}": float(i)})

        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    async def read() -> tuple[dict[str, dict[str, Any]], dict[str, float], int]:
        async with stores(where, 1) as (store,):
            return await store.entries(), await store.runs(), await store.version()

    before = asyncio.run(read())[2]
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    entries, runs, version = asyncio.run(read())
    expected: dict[str, dict[str, Any]] = {
        f"w{n}-{i}": {"task": "t", "n": i} for n in range(4) for i in range(25)
    }
    assert entries == expected
    assert runs == {name: float(entry["n"]) for name, entry in expected.items()}
    assert version != before


# -- across processes --------------------------------------------------------------------------
CHILD_SETUP = """
import importlib
module, name = ARG["spec"].split(":")
store = getattr(importlib.import_module(module), name)(ARG["url"], ARG["options"])
loop = asyncio.new_event_loop()
loop.run_until_complete(store.open())
"""
LEAD_BODY = """
RESULT = loop.run_until_complete(store.lead(ARG["node"], 60))
loop.run_until_complete(store.close())
"""
WRITE_BODY = """
async def write():
    for i in range(25):
        await store.put_entries({ARG["node"] + "-" + str(i): {"task": "t", "n": i}})
        await store.record_runs({ARG["node"] + "-" + str(i): float(i)})
    await store.close()
loop.run_until_complete(write())
RESULT = True
"""
DIE_LEADING_BODY = """
import os
RESULT = loop.run_until_complete(store.lead(ARG["node"], ARG["ttl"]))
print(json.dumps(RESULT), flush=True)
os._exit(0)  # as kill -9 would: no resign, no close
"""


def child_args(where: Where, count: int, **extra: Any) -> list[dict[str, Any]]:
    base = {"spec": where.spec, "url": where.url, "options": where.options, **extra}
    return [{**base, "node": f"p{n}"} for n in range(count)]


def test_processes_contending_for_the_lease_one_wins(case: Case, where: Where) -> None:
    if not case.processes:
        pytest.skip("this store's state lives in one process")
    results = race(CHILD_SETUP, LEAD_BODY, child_args(where, 4))
    assert sorted(results) == [False, False, False, True]


def test_processes_writing_at_once_lose_nothing(case: Case, where: Where) -> None:
    if not case.processes:
        pytest.skip("this store's state lives in one process")
    race(CHILD_SETUP, WRITE_BODY, child_args(where, 3))

    async def read() -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
        async with stores(where, 1) as (store,):
            return await store.entries(), await store.runs()

    entries, runs = asyncio.run(read())
    assert entries == {f"p{n}-{i}": {"task": "t", "n": i} for n in range(3) for i in range(25)}
    assert runs == {f"p{n}-{i}": float(i) for n in range(3) for i in range(25)}


def test_a_dead_leaders_lease_expires_for_another_process(case: Case, where: Where) -> None:
    if not case.processes:
        pytest.skip("this store's state lives in one process")
    ttl = 3 * TTL  # room for the child's exit before the first look
    [led] = race(CHILD_SETUP, DIE_LEADING_BODY, child_args(where, 1, ttl=ttl))
    gone = time.monotonic()
    assert led is True

    async def take_over() -> None:
        async with stores(where, 1) as (store,):
            # a lease may move at once (RabbitMQ sees the dead connection) or at its expiry
            # (Redis, SQLite): either way, within the ttl
            if not await store.lead("survivor", ttl):
                await sleep_until(gone + ttl + 0.05)
                assert await store.lead("survivor", ttl)

    asyncio.run(take_over())


# -- start-up errors ---------------------------------------------------------------------------
def test_a_bad_option_fails_when_the_store_is_made_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="busy_timeout"):
        SQLiteBeatStore(f"sqlite:///{tmp_path}/x.db", {"busy_timeout": "soon"})
    with pytest.raises(ImproperlyConfigured, match="synchronous"):
        SQLiteBeatStore(f"sqlite:///{tmp_path}/x.db", {"synchronous": "sometimes"})
    from celeriac.beat.redis_store import RedisBeatStore

    with pytest.raises(ImproperlyConfigured, match="retries"):
        RedisBeatStore(REDIS_URL, {"retries": "many"})
    with pytest.raises(ImproperlyConfigured, match="database"):
        RedisBeatStore("redis://127.0.0.1:6379/minus-one")


@run_async
async def test_an_unreachable_redis_fails_on_open_without_the_password() -> None:
    from celeriac.beat.redis_store import RedisBeatStore

    store = RedisBeatStore("redis://:s3cret@127.0.0.1:1/0", {"retries": 0})
    with pytest.raises(TransportError) as failed:
        await store.open()
    assert "127.0.0.1:1" in str(failed.value)
    assert "s3cret" not in str(failed.value)
    await store.close()
