"""One conformance suite for the revoke stores (:mod:`celeriac.control.revokes`): memory,
SQLite, Redis and RabbitMQ, each in a namespace of the test's own (a memory URL, a database
file, a key prefix, a stream name). Expiry is tested with revokes made already expired, never
by waiting; "another store" is a second instance on its own connection, as a worker started
later has."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import amqp_broker
from celeriac import Celeriac
from celeriac.control.revokes import (
    STORES,
    MemoryRevokeStore,
    Revoke,
    RevokeStore,
    open_revoke_store,
    revokes_for,
)
from celeriac.errors import ImproperlyConfigured
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/15"


@dataclass
class Place:
    """Where one test's store lives: an app whose broker it is."""

    app: Celeriac
    cleanup: Any = None

    def store(self) -> RevokeStore:
        store = open_revoke_store(self.app)
        assert store is not None
        return store


def _memory(tmp_path: Path, name: str) -> Place:
    return Place(Celeriac("t", broker=f"memory://{name}"))


def _sqlite(tmp_path: Path, name: str) -> Place:
    return Place(Celeriac("t", broker=f"sqlite:///{tmp_path / name}.db"))


def _redis(tmp_path: Path, name: str) -> Place:
    require_service("Redis", 6379)
    prefix = f"celeriac-test:{name}:"
    app = Celeriac("t", broker=REDIS_URL, broker_transport_options={"key_prefix": prefix})
    return Place(app, lambda: delete_redis_keys(REDIS_URL, prefix))


def _amqp(tmp_path: Path, name: str) -> Place:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    stream = f"celeriac-test.revokes.{name}"
    app = Celeriac("t", broker=amqp_broker.URL, broker_transport_options={"revokes_stream": stream})
    return Place(app, lambda: amqp_broker.delete([stream]))


PLACES = {"memory": _memory, "sqlite": _sqlite, "redis": _redis, "amqp": _amqp}


@pytest.fixture(params=sorted(PLACES))
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    found = PLACES[request.param](tmp_path, uuid.uuid4().hex[:12])
    yield found
    found.app.close()
    if found.cleanup is not None:
        found.cleanup()


async def _live(store: RevokeStore, limit: int = 1000) -> dict[str, float]:
    await store.open()
    try:
        return {r.key: r.expires_at for r in await store.live(limit)}
    finally:
        await store.close()


async def _add(store: RevokeStore, revokes: list[Revoke]) -> None:
    await store.open()
    try:
        await store.add(revokes)
    finally:
        await store.close()


def test_a_revoke_is_seen_by_another_store_until_it_expires(place: Place) -> None:
    now = time.time()
    revokes = [
        Revoke("t1", "id", now + 60),
        Revoke("r1", "root_id", now + 60),
        Revoke("p1", "parent_id", now + 60),
        Revoke("gone", "id", now - 1),  # made expired: never seen
    ]
    asyncio.run(_add(place.store(), revokes))
    seen = asyncio.run(_live(place.store()))
    assert seen == {"id:t1": now + 60, "root_id:r1": now + 60, "parent_id:p1": now + 60}


def test_a_revoke_made_again_keeps_the_later_expiry(place: Place) -> None:
    now = time.time()
    store = place.store()

    async def run() -> dict[str, float]:
        await store.open()
        try:
            await store.add([Revoke("t", "id", now + 100)])
            await store.add([Revoke("t", "id", now + 50)])  # earlier: does not shorten it
            await store.add([Revoke("u", "id", now + 50), Revoke("u", "id", now + 70)])
            return {r.key: r.expires_at for r in await store.live(10)}
        finally:
            await store.close()

    assert asyncio.run(run()) == {"id:t": now + 100, "id:u": now + 70}


def test_live_gives_the_revokes_that_expire_last_within_the_limit(place: Place) -> None:
    now = time.time()
    asyncio.run(_add(place.store(), [Revoke(f"t{i}", "id", now + 10 + i) for i in range(10)]))
    seen = asyncio.run(_live(place.store(), limit=3))
    assert sorted(seen) == ["id:t7", "id:t8", "id:t9"]


def test_stores_written_from_several_threads_at_once_keep_every_revoke(place: Place) -> None:
    gun = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            store = place.store()

            async def run() -> None:
                await store.open()
                gun.wait(10)
                try:
                    for i in range(5):
                        await store.add(revokes_for([f"w{n}-{i}"], "id", 60))
                finally:
                    await store.close()

            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    seen = asyncio.run(_live(place.store()))
    assert set(seen) == {f"id:w{n}-{i}" for n in range(4) for i in range(5)}


def test_every_broker_scheme_has_a_store() -> None:
    assert set(STORES) >= {"memory", "sqlite", "redis", "rediss", "amqp", "amqps"}
    assert isinstance(open_revoke_store(Celeriac("t", broker="memory://x")), MemoryRevokeStore)


@pytest.mark.parametrize("bad", [0, -5])
def test_a_worker_revoke_expires_not_above_zero_names_the_setting(bad: float) -> None:
    app = Celeriac("t", broker="memory://bad", worker_revoke_expires=bad)
    with pytest.raises(ImproperlyConfigured, match="worker_revoke_expires"):
        open_revoke_store(app)


@pytest.mark.parametrize("bad", ["soon", True])
def test_a_worker_revoke_expires_not_a_number_names_the_setting(bad: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="worker_revoke_expires"):
        Celeriac("t", broker="memory://bad", worker_revoke_expires=bad)
