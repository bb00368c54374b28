"""The Redis result backend against real servers: wake-up latency, many waiters, counters
across processes, expiry, cancel-safety of ``await_for``, and a server restart survived.

Most tests use the shared server on 127.0.0.1:6379 (skipped when it is missing, failed under
``CELERIAC_REQUIRE_SERVICES=1``), each under a key prefix of its own that is SCANned away
afterwards. The restart test runs its own ``redis-server`` on a free port. Steps are ordered by
events (a subscriber count, a "ready" line, a process exit), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from _secrets_scan import register_secret
from celeriac import states
from celeriac.errors import BackendError, ImproperlyConfigured
from celeriac.results.base import ResultMeta
from celeriac.results.redis import RedisBackend
from celeriac.results.registry import create_backend
from celeriac.results.result import AsyncResult
from celeriac.transports.redis import resp
from conftest import delete_redis_keys, require_service
from suite_rules import require_tool

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/15"


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``condition`` (a cheap server-side check), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.0005)


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("Redis", 6379)
    value = f"celeriac-it:{uuid.uuid4().hex[:12]}:"
    yield value
    delete_redis_keys(URL, value)


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    """A plain client on the shared server, to look at it from outside the backend."""
    require_service("Redis", 6379)
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def make_backend(prefix: str) -> Iterator[Callable[..., RedisBackend]]:
    made: list[RedisBackend] = []

    def make(**options: Any) -> RedisBackend:
        options.setdefault("key_prefix", prefix)
        backend = create_backend(URL, **options)
        assert isinstance(backend, RedisBackend)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def subscribers(client: redis.Redis, channels: list[str]) -> int:
    counts = client.pubsub_numsub(*channels)
    return sum(int(n) for _, n in counts)


def success(task_id: str, result: Any = None) -> ResultMeta:
    return ResultMeta(task_id=task_id, status=states.SUCCESS, result=result)


# -- waking ---------------------------------------------------------------------------------------


def test_wake_up_latency(make_backend: Callable[..., RedisBackend], admin: redis.Redis) -> None:
    """Store-to-wake-up latency of a blocked ``wait_for``, over 200 rounds; prints the p50."""
    waiter, writer = make_backend(), make_backend()
    rounds = 200
    latencies: list[float] = []
    for _ in range(rounds):
        task_id = str(uuid.uuid4())
        woke: list[float] = []

        def wait(task_id: str = task_id, woke: list[float] = woke) -> None:
            waiter.wait_for(task_id, timeout=30)
            woke.append(time.perf_counter())

        thread = threading.Thread(target=wait)
        thread.start()
        channel = [waiter.ready_channel(task_id)]
        until(lambda: subscribers(admin, channel) == 1, "the waiter to subscribe")  # noqa: B023
        started = time.perf_counter()
        writer.store(success(task_id, 1))
        thread.join(30)
        assert woke, "the waiter did not wake"
        latencies.append(woke[0] - started)
    p50 = statistics.median(latencies) * 1000
    p99 = sorted(latencies)[int(rounds * 0.99) - 1] * 1000
    print(
        f"\nredis backend wake-up latency (store -> wait_for returns): p50 {p50:.3f} ms, "
        f"p99 {p99:.3f} ms over {rounds} rounds"
    )
    assert p50 < 50, f"p50 wake-up latency {p50:.1f} ms"


def test_async_wake_up_latency(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    waiter, writer = make_backend(), make_backend()
    rounds = 200

    async def scenario() -> list[float]:
        latencies = []
        for _ in range(rounds):
            task_id = str(uuid.uuid4())
            waiting = asyncio.create_task(waiter.await_for(task_id, timeout=30))
            channel = waiter.ready_channel(task_id)
            deadline = time.monotonic() + 10
            while subscribers(admin, [channel]) != 1:
                assert time.monotonic() < deadline, "await_for never subscribed"
                await asyncio.sleep(0.0005)
            started = time.perf_counter()
            await writer.astore(success(task_id, 2))
            meta = await waiting
            latencies.append(time.perf_counter() - started)
            assert meta.result == 2
        return latencies

    latencies = asyncio.run(scenario())
    p50 = statistics.median(latencies) * 1000
    print(f"\nredis backend wake-up latency (astore -> await_for returns): p50 {p50:.3f} ms")
    assert p50 < 50


def test_many_waiters_all_wake(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    """200 threads on 200 ids and 50 on one id, all subscribed before anything is stored."""
    waiter, writer = make_backend(), make_backend()
    distinct = [str(uuid.uuid4()) for _ in range(200)]
    shared = str(uuid.uuid4())
    targets = distinct + [shared] * 50
    results: dict[int, ResultMeta] = {}
    errors: list[BaseException] = []

    def wait(index: int, task_id: str) -> None:
        try:
            results[index] = waiter.wait_for(task_id, timeout=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    try:
        channels = [waiter.ready_channel(t) for t in distinct]
        until(lambda: subscribers(admin, channels) == 200, "200 distinct subscriptions", 60)
        until(
            lambda: subscribers(admin, [waiter.ready_channel(shared)]) == 50,
            "50 subscriptions on the shared id",
            60,
        )
        started = time.perf_counter()
        for task_id in distinct:
            writer.store(success(task_id, task_id))
        writer.store(success(shared, "shared"))
    finally:
        for thread in threads:
            thread.join(60)
    elapsed = time.perf_counter() - started
    print(f"\n250 waiters woken in {elapsed * 1000:.1f} ms after the first of 201 stores")
    assert not errors
    assert len(results) == 250
    for index, task_id in enumerate(targets):
        expected = "shared" if task_id == shared else task_id
        assert (results[index].status, results[index].result) == (states.SUCCESS, expected)
    assert waiter._sub_pool._in_use_connections == set()


def test_a_store_is_one_write_on_the_socket(make_backend: Callable[..., RedisBackend]) -> None:
    """MULTI, SET, PUBLISH and EXEC leave in one ``sendall``: redis-py writes each item of a
    list of packed commands with one of its own (a syscall, and a segment Redis may read
    alone), which a worker paid on every task's result."""
    backend = make_backend()
    backend.store(success(str(uuid.uuid4()), 1))  # opens this thread's own connection
    conn = backend._own()
    sock = conn._sock
    writes: list[int] = []

    class Counted:
        def __getattr__(self, name: str) -> Any:
            return getattr(sock, name)

        def sendall(self, data: bytes) -> None:
            writes.append(len(data))
            sock.sendall(data)

    conn._sock = Counted()
    try:
        task_id = str(uuid.uuid4())
        backend.store(success(task_id, 2))
    finally:
        conn._sock = sock
    assert len(writes) == 1
    assert backend.get_meta(task_id).result == 2


def test_round_trips_per_operation(
    make_backend: Callable[..., RedisBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store is one MULTI (SET and PUBLISH, written at once); a wait on a ready result is
    one GET and no subscription (the GETs on the thread's own connection, like the store)."""
    backend = make_backend()
    sent: list[str] = []
    transactions: list[list[str]] = []
    subscriptions: list[int] = []
    client: Any = backend._client  # redis-py leaves execute_command untyped
    execute, transaction, call = client.execute_command, resp.transaction, resp.call
    make_connection = backend._sub_pool.make_connection

    def counting_execute(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return execute(*args, **options)

    def counting_call(conn: Any, command: Any) -> Any:
        sent.append(str(command[0]))
        return call(conn, command)

    def counting_transaction(conn: Any, commands: Any) -> Any:
        transactions.append([str(command[0]) for command in commands])
        return transaction(conn, commands)

    def counting_make_connection() -> Any:
        subscriptions.append(1)
        return make_connection()

    monkeypatch.setattr(backend._client, "execute_command", counting_execute)
    monkeypatch.setattr(resp, "transaction", counting_transaction)
    monkeypatch.setattr(resp, "call", counting_call)
    monkeypatch.setattr(backend._sub_pool, "make_connection", counting_make_connection)

    task_id = str(uuid.uuid4())
    backend.store(success(task_id, 1))
    assert (sent, transactions) == ([], [["SET", "PUBLISH"]])  # one MULTI, one round trip
    assert backend.wait_for(task_id, timeout=10).result == 1
    assert (sent, subscriptions) == (["GET"], [])
    sent.clear()
    assert backend.wait_for(str(uuid.uuid4()), timeout=0.1).status == states.PENDING
    assert (sent, subscriptions) == (["GET", "GET"], [1])  # read, subscribe, read again
    sent.clear()
    assert backend.wait_for(str(uuid.uuid4()), timeout=0.1).status == states.PENDING
    assert (sent, subscriptions) == (["GET", "GET"], [1])  # the thread's connection, reused
    sent.clear()
    assert backend.wait_for(task_id, timeout=10).result == 1  # ready: SUBSCRIBE written, unread
    assert (sent, subscriptions) == (["GET"], [1])
    sent.clear()
    assert backend.wait_for(task_id, timeout=0).result == 1  # a look: one GET, nothing written
    assert (sent, subscriptions, backend._subscribers.subscribed()) == (
        ["GET"],
        [1],
        backend.ready_channel(task_id).encode(),
    )


# -- the thread's reused subscriber connection -----------------------------------------------------


def warm(backend: RedisBackend) -> None:
    """Give this thread its subscriber connection (a thread's first wait opens it after its
    first GET; every later wait writes its SUBSCRIBE before the GET), with no reply left
    unread on it: a short wait may time out before its confirmation arrives."""
    for _ in range(1000):
        assert backend.wait_for(str(uuid.uuid4()), timeout=0.01).status == states.PENDING
        held = backend._subscribers._mine()
        if held is not None and held.pending == 0:
            return
    pytest.fail("no wait read its confirmation")


def store_later(backend: RedisBackend, meta: ResultMeta, delay: float = 0.05) -> threading.Timer:
    """Store ``meta`` ``delay`` seconds from now, while the caller waits (join the timer)."""
    timer = threading.Timer(delay, lambda: backend.store(meta))
    timer.start()
    return timer


def wire_log(
    backend: RedisBackend,
    monkeypatch: pytest.MonkeyPatch,
    after_get: Callable[[list[str]], None] = lambda log: None,
) -> list[str]:
    """What a sync wait does, in order: each command sent (``GET``, on the thread's own
    connection; any on the command client),
    each write on the thread's subscriber connection (``write UNSUBSCRIBE SUBSCRIBE``) and each
    reply read from it (``read subscribe``). Spies that pass every call through to the real
    server; the subscriber connections made from here on are watched. ``after_get`` runs after
    each command's reply, to order a store by the waiter's steps rather than by a timer."""
    log: list[str] = []
    client: Any = backend._client  # redis-py leaves execute_command untyped
    execute = client.execute_command
    make_connection = backend._sub_pool.make_connection

    def logged_execute(*args: Any, **options: Any) -> Any:
        log.append(str(args[0]))
        reply = execute(*args, **options)
        after_get(log)
        return reply

    def watched_connection() -> Any:
        conn: Any = make_connection()
        send, read = conn.send_packed_command, conn.read_response

        def logged_send(packed: Any, *args: Any, **options: Any) -> Any:
            chunks = packed if isinstance(packed, list) else [packed]
            lines = b"".join(bytes(chunk) for chunk in chunks).split(b"\r\n")
            names = [lines[i + 2].decode() for i, line in enumerate(lines) if line[:1] == b"*"]
            log.append("write " + " ".join(names))
            return send(packed, *args, **options)

        def logged_read(*args: Any, **options: Any) -> Any:
            reply = read(*args, **options)
            kind = reply[0].decode() if isinstance(reply, list) else repr(reply)
            log.append(f"read {kind}")
            return reply

        conn.send_packed_command, conn.read_response = logged_send, logged_read
        return conn

    call = resp.call

    def logged_call(conn: Any, command: Any) -> Any:  # the GETs, on the thread's connection
        log.append(str(command[0]))
        reply = call(conn, command)
        after_get(log)
        return reply

    monkeypatch.setattr(backend._client, "execute_command", logged_execute)
    monkeypatch.setattr(resp, "call", logged_call)
    monkeypatch.setattr(backend._sub_pool, "make_connection", watched_connection)
    return log


def test_get_of_a_result_stored_while_it_waits(make_backend: Callable[..., RedisBackend]) -> None:
    """The normal path, on a thread's first wait (GET, then a new connection) and on later
    ones (SUBSCRIBE written before the GET): stored ~50 ms after ``get()`` starts."""
    waiter, writer = make_backend(), make_backend()
    for value in ("first wait of the thread", "second", "third"):
        task_id = str(uuid.uuid4())
        timer = store_later(writer, success(task_id, value))
        assert AsyncResult[Any](task_id, waiter).get(timeout=10) == value
        timer.join(10)


def store_after_the_second_get(
    writer: RedisBackend, meta: ResultMeta
) -> Callable[[list[str]], None]:
    """An ``after_get`` for :func:`wire_log`: store ``meta`` once the waiter's second GET (the
    one after its confirmation) has answered, so that the record can only arrive as a message."""

    def hook(log: list[str]) -> None:
        # not a warm-up: the SUBSCRIBE written first (after reading what earlier waits left)
        start = next((i for i, entry in enumerate(log) if not entry.startswith("read")), 0)
        overlapped = log[start : start + 2] == ["write UNSUBSCRIBE SUBSCRIBE", "GET"]
        if overlapped and log[-2:] == ["read subscribe", "GET"] and log.count("GET") == 2:
            writer.store(meta)

    return hook


def test_a_not_ready_get_overlaps_its_subscribe_with_the_first_get(
    make_backend: Callable[..., RedisBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round trips of a not-ready ``get()`` on a thread that holds its connection: the
    SUBSCRIBE is written, the first GET runs while it is on its way, the confirmation is read
    after it, then the second (and last) GET; the stored record rides on the message."""
    waiter, writer = make_backend(), make_backend()
    task_id = str(uuid.uuid4())
    log = wire_log(
        waiter, monkeypatch, store_after_the_second_get(writer, success(task_id, "late"))
    )
    warm(waiter)
    assert log[:2] == ["GET", "write SUBSCRIBE"]  # a thread's first wait reads, then connects
    log.clear()
    assert AsyncResult[Any](task_id, waiter).get(timeout=10) == "late"
    assert log == [
        "write UNSUBSCRIBE SUBSCRIBE",
        "GET",  # round trip 1, with the subscription on its way: the two overlap
        "read unsubscribe",
        "read subscribe",  # the confirmation: only now may the key be read again
        "GET",  # round trip 2
        "read message",  # the record itself: no third GET
    ]
    log.clear()
    assert waiter.wait_for(str(uuid.uuid4()), timeout=0.05).status == states.PENDING
    assert log == [
        "write UNSUBSCRIBE SUBSCRIBE",
        "GET",
        "read unsubscribe",
        "read subscribe",
        "GET",
    ]


def test_a_ready_get_leaves_its_confirmation_for_the_next_wait_to_skip(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record ready at the first GET returns without reading anything on the subscriber; the
    next wait, on another id, skips that confirmation and any message that followed it."""
    waiter, writer = make_backend(), make_backend()
    done, later = str(uuid.uuid4()), str(uuid.uuid4())
    log = wire_log(waiter, monkeypatch, store_after_the_second_get(writer, success(later, "later")))
    warm(waiter)
    writer.store(success(done, "done"))
    log.clear()
    assert AsyncResult[Any](done, waiter).get(timeout=10) == "done"
    assert log == ["write UNSUBSCRIBE SUBSCRIBE", "GET"]
    # still subscribed to `done` (confirmed or not): a hint on it waits, unread, on the socket
    until(lambda: subscribers(admin, [waiter.ready_channel(done)]) == 1, "the subscription")
    assert admin.publish(waiter.ready_channel(done), writer._encode(success(later, "bogus"))) == 1
    log.clear()
    assert AsyncResult[Any](later, waiter).get(timeout=10) == "later"
    assert log == [
        "read unsubscribe",  # the two replies the wait on `done` left behind, read at once
        "read subscribe",
        "write UNSUBSCRIBE SUBSCRIBE",
        "GET",
        "read message",  # the hint on `done`: before this wait's confirmation, dropped
        "read unsubscribe",
        "read subscribe",  # this wait's confirmation
        "GET",
        "read message",  # the record, stored after that GET
    ]
    assert subscribers(admin, [waiter.ready_channel(done)]) == 0
    with pytest.raises(TimeoutError):  # and a wait that times out still reads as one
        AsyncResult[Any](str(uuid.uuid4()), waiter).get(timeout=0.05)


def test_a_loop_of_ready_gets_leaves_no_backlog_of_replies(
    make_backend: Callable[..., RedisBackend],
) -> None:
    """Each ready get returns before its confirmation; the next one reads what is already there
    first and, while a confirmation is still on its way, GETs without subscribing: at most one
    reply set stays unread, so a later real wait does not read through thousands."""
    waiter, writer = make_backend(), make_backend()
    warm(waiter)
    ids = [str(uuid.uuid4()) for _ in range(2000)]
    writer.store_many([success(task_id, i) for i, task_id in enumerate(ids)])
    for i, task_id in enumerate(ids):
        assert AsyncResult[Any](task_id, waiter).get(timeout=10) == i
        held = waiter._subscribers._mine()
        assert held is not None and held.pending <= 1
    later = str(uuid.uuid4())
    timer = threading.Timer(0.05, writer.store, (success(later, "later"),))
    timer.start()
    try:
        assert AsyncResult[Any](later, waiter).get(timeout=10) == "later"
    finally:
        timer.join()


def test_the_same_id_twice_after_a_ready_get(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    """Two waits on one channel, the first ready at once: the second's SUBSCRIBE is not
    preceded by an UNSUBSCRIBE, so two confirmations of the same channel are owed, and only the
    second one confirms it (a message between the two is dropped, not taken as the result)."""
    waiter, writer = make_backend(), make_backend()
    warm(waiter)
    task_id = str(uuid.uuid4())
    writer.store(success(task_id, "once"))
    assert AsyncResult[Any](task_id, waiter).get(timeout=10) == "once"
    assert AsyncResult[Any](task_id, waiter).get(timeout=10) == "once"  # the same channel again
    assert waiter.wait_for(task_id, timeout=0).result == "once"
    # The same again, with a stale hint between the two subscriptions: the record is forgotten,
    # and an announcement of a ready record (never stored) sits behind the unread confirmation.
    assert AsyncResult[Any](task_id, waiter).get(timeout=10) == "once"
    writer.forget(task_id)
    until(lambda: subscribers(admin, [waiter.ready_channel(task_id)]) == 1, "the subscription")
    stale = writer._encode(success(task_id, "stale"))
    assert admin.publish(waiter.ready_channel(task_id), stale) == 1
    assert waiter.wait_for(task_id, timeout=0.05).status == states.PENDING
    timer = store_later(writer, success(task_id, "twice"))
    assert AsyncResult[Any](task_id, waiter).get(timeout=10) == "twice"
    timer.join(10)


def test_a_failed_first_get_raises_without_a_subscriber_retry(
    make_backend: Callable[..., RedisBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of the first GET (the command connection) is the caller's, as before: it is
    raised as it is, the subscriber is not retried on a new connection but dropped (the wait
    failed midway), and the next wait opens a new one and works."""
    waiter, writer = make_backend(), make_backend()
    warm(waiter)
    made: list[int] = []
    make_connection = waiter._sub_pool.make_connection

    def counting_make_connection() -> Any:
        made.append(1)
        return make_connection()

    def failing_read(task_id: str) -> bytes | None:
        raise BackendError(f"read {task_id}: down (test)")

    monkeypatch.setattr(waiter._sub_pool, "make_connection", counting_make_connection)
    with monkeypatch.context() as patch:
        patch.setattr(waiter, "_read", failing_read)
        with pytest.raises(BackendError, match=r"down \(test\)"):
            waiter.wait_for(str(uuid.uuid4()), timeout=5)
    assert made == [] and waiter._subscribers.subscribed() is None
    task_id = str(uuid.uuid4())
    timer = store_later(writer, success(task_id, "after"))
    assert AsyncResult[Any](task_id, waiter).get(timeout=10) == "after"
    timer.join(10)
    assert made == [1]


def test_a_stale_message_on_the_reused_subscriber_is_ignored(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    """Messages left on the thread's connection by an earlier wait are never taken as this
    wait's result: neither one on the old channel, nor one on the same channel sent before this
    wait subscribed again."""
    waiter, writer = make_backend(), make_backend()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert waiter.wait_for(first, timeout=0.01).status == states.PENDING
    # still subscribed to `first`: this store's announcement sits unread on the connection
    writer.store(success(first, "first"))
    assert waiter.wait_for(second, timeout=0.05).status == states.PENDING
    assert subscribers(admin, [waiter.ready_channel(first)]) == 0  # dropped by the second wait
    # an announcement of a ready record on `second` whose key was never written: a hint that
    # predates the next wait's subscription must be dropped, the key read instead
    record = writer._encode(success(second, "never stored"))
    assert admin.publish(waiter.ready_channel(second), record) == 1
    assert waiter.wait_for(second, timeout=0.05).status == states.PENDING
    writer.store(success(second, "second"))
    assert waiter.wait_for(second, timeout=10).result == "second"


def test_a_result_stored_before_the_subscription_is_seen(
    make_backend: Callable[..., RedisBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored after the first read but before SUBSCRIBE: the read after the confirmation has it
    (no message will ever come). On a thread that holds its connection the SUBSCRIBE was
    already written when the first read ran, so the store may land on either side of it: the
    result is seen either way."""
    waiter, writer = make_backend(), make_backend()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    read = waiter._read

    def read_then_store(task_id: str) -> bytes | None:
        data = read(task_id)
        writer.store(success(task_id, "early"))
        return data

    monkeypatch.setattr(waiter, "_read", read_then_store)
    assert waiter.wait_for(first, timeout=10).result == "early"  # the thread's first wait
    assert waiter.wait_for(second, timeout=10).result == "early"  # SUBSCRIBE written first


def test_waiting_threads_and_a_forked_child_each_use_their_own_subscriber(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    """A forked child never writes on its parent's subscriber socket: the parent's connection
    keeps its subscription and serves the parent's next wait."""
    waiter, writer = make_backend(), make_backend()
    parked, in_child = str(uuid.uuid4()), str(uuid.uuid4())
    assert waiter.wait_for(parked, timeout=0.01).status == states.PENDING
    before = waiter._subscribers.subscribed()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit status
        status = 1  # whatever happens in the child (an exception too), it leaves here
        try:
            status = 0 if waiter.wait_for(in_child, timeout=10).result == "child" else 1
        finally:
            os._exit(status)
    until(lambda: subscribers(admin, [waiter.ready_channel(in_child)]) == 1, "the child to wait")
    writer.store(success(in_child, "child"))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert subscribers(admin, [waiter.ready_channel(parked)]) == 1
    assert waiter._subscribers.subscribed() == before
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(waiter.wait_for(in_child, timeout=10).result)
    )
    thread.start()
    thread.join(10)
    assert results == ["child"]
    later = str(uuid.uuid4())
    writer.store(success(later, "parent"))
    assert waiter.wait_for(later, timeout=10).result == "parent"


# -- counters and expiry --------------------------------------------------------------------------

INCREMENTER = textwrap.dedent(
    """
    import json, sys
    from celeriac.results.redis import RedisBackend

    backend = RedisBackend(sys.argv[1], key_prefix=sys.argv[2])
    backend.incr("warm-up", 0)
    print("ready", flush=True)
    sys.stdin.readline()
    values = [backend.incr("chord-counter") for _ in range(int(sys.argv[3]))]
    backend.close()
    print(json.dumps(values), flush=True)
    """
)


def test_incr_is_atomic_across_processes(prefix: str) -> None:
    per_process = 500
    children = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, URL, prefix, str(per_process)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:  # both start together
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        seen: list[int] = []
        for child in children:
            assert child.stdout is not None
            seen.extend(json.loads(child.stdout.readline()))
            assert child.wait(60) == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert sorted(seen) == list(range(1, 2 * per_process + 1))


def test_expiry_is_set_natively(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    expiring, lasting = make_backend(expires=60.0), make_backend(expires=None)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    expiring.store(success(first))
    lasting.store(success(second))
    assert 0 < admin.pttl(expiring.result_key(first)) <= 60_000
    assert admin.pttl(lasting.result_key(second)) == -1

    expiring.incr("c")
    assert 0 < admin.pttl(expiring.counter_key("c")) <= 60_000
    lasting.incr("c")  # an increment without expiry makes the counter last
    assert admin.pttl(lasting.counter_key("c")) == -1
    assert expiring.cleanup() == 0


# -- cancel-safety --------------------------------------------------------------------------------


def named_connections(admin: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in admin.client_list() if c.get("name") == name]


def test_cancelled_await_for_releases_its_connection(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    name = f"celeriac-it-{uuid.uuid4().hex[:8]}"
    backend = make_backend(client_name=name)

    async def scenario() -> None:
        await backend.aget_meta("warm-up")
        pool: Any = backend._loops[asyncio.get_running_loop()].sub_pool
        assert len(pool._in_use_connections) == 0
        for _ in range(5):
            task_id = str(uuid.uuid4())
            waiting = asyncio.create_task(backend.await_for(task_id, timeout=None))
            channel = backend.ready_channel(task_id)
            deadline = time.monotonic() + 10
            while subscribers(admin, [channel]) != 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.001)
            assert len(pool._in_use_connections) == 1
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert len(pool._in_use_connections) == 0
            while subscribers(admin, [channel]) != 0:  # the server saw the connection go
                assert time.monotonic() < deadline, "a cancelled waiter is still subscribed"
                await asyncio.sleep(0.001)
        # Cancelled at every kind of await: connecting, sending, the GET, the read.
        for steps in range(60):
            waiting = asyncio.create_task(backend.await_for(str(uuid.uuid4()), timeout=None))
            for _ in range(steps % 12):
                await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert len(pool._in_use_connections) == 0, f"leaked after {steps % 12} steps"
        # Timed-out waits unsubscribe cleanly and reuse one connection: no growth.
        for _ in range(20):
            assert (await backend.await_for(str(uuid.uuid4()), timeout=0.005)).status == "PENDING"
        assert len(pool._in_use_connections) == 0
        assert not [c for c in named_connections(admin, name) if int(c.get("sub", 0))]
        assert len(named_connections(admin, name)) <= 2

    asyncio.run(scenario())
    # asyncio.run shut the loop down, and with it the loop's pool.
    assert backend._loops == {}
    until(lambda: named_connections(admin, name) == [], "the async pool to close")


def test_timed_out_waits_do_not_leak_connections(
    make_backend: Callable[..., RedisBackend], admin: redis.Redis
) -> None:
    name = f"celeriac-it-{uuid.uuid4().hex[:8]}"
    backend = make_backend(client_name=name)
    for _ in range(20):
        assert backend.wait_for(str(uuid.uuid4()), timeout=0.005).status == states.PENDING
    assert len(named_connections(admin, name)) <= 2
    # the thread's subscriber stays, subscribed to the last channel only (dropped on the next wait)
    assert [int(c["sub"]) for c in named_connections(admin, name) if int(c.get("sub", 0))] == [1]
    backend.close()
    until(lambda: named_connections(admin, name) == [], "close() to disconnect the subscriber")


# -- configuration and secrets --------------------------------------------------------------------


def test_options_from_the_url_and_unknown_names() -> None:
    with pytest.raises(ImproperlyConfigured, match="lease_secs"):
        RedisBackend("redis://127.0.0.1:6379/0", lease_secs=3)
    with pytest.raises(ImproperlyConfigured, match="bogus"):
        RedisBackend("redis://127.0.0.1:6379/0?bogus=1")
    backend = RedisBackend("redis://127.0.0.1:6379/3?key_prefix=q:&socket_timeout=2")
    try:
        assert backend.key_prefix == "q:"
        assert backend.target.kwargs["socket_timeout"] == 2.0
        assert backend.target.kwargs["socket_connect_timeout"] == 5.0  # the backend's default
        assert repr(backend) == "<RedisBackend redis://127.0.0.1:6379/3 prefix='q:'>"
    finally:
        backend.close()


def test_password_never_leaks(caplog: pytest.LogCaptureFixture, unused_port: int) -> None:
    secret = "hunter2-" + uuid.uuid4().hex
    backend = RedisBackend(f"redis://user:{secret}@127.0.0.1:{unused_port}/0?password={secret}")
    caplog.set_level(logging.DEBUG)
    messages = [repr(backend), str(backend.target)]
    attempts: list[Callable[[], Any]] = [
        lambda: backend.store(success("x")),
        lambda: backend.get_meta("x"),
        lambda: backend.wait_for("x", timeout=1),
        lambda: backend.incr("c"),
        lambda: backend.forget("x"),
        lambda: asyncio.run(backend.await_for("x", timeout=1)),
        lambda: asyncio.run(backend.astore(success("x"))),
    ]
    for attempt in attempts:
        with pytest.raises(BackendError) as info:
            attempt()
        messages += [str(info.value), repr(info.value), repr(info.value.__cause__)]
    sentinel = RedisBackend(
        f"redis+sentinel://:{secret}@127.0.0.1:{unused_port}/0",
        master_name="mymaster",
        socket_connect_timeout=1,
    )
    with pytest.raises(BackendError) as info:
        sentinel.store(success("x"))
    assert len(str(info.value)) < 300, "a reason should be short"
    messages += [str(info.value), repr(sentinel)]
    assert all(secret not in message for message in messages)
    assert secret not in caplog.text
    assert f"127.0.0.1:{unused_port}" in messages[2]  # it does say where


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- a server of our own: restart, unix socket ---------------------------------------------------


class OwnRedis:
    """A ``redis-server`` subprocess with an append-only file fsynced on every write."""

    def __init__(self, directory: Path, port: int, password: str) -> None:
        self.directory, self.port, self.password = directory, port, password
        self.socket_path = directory / "redis.sock"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
                str(self.directory),
                "--requirepass",
                self.password,
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        output: list[str] = []

        def read(stream: Any) -> None:
            for line in stream:
                output.append(line)
                if "Ready to accept connections" in line:
                    ready.set()

        threading.Thread(target=read, args=(self.process.stdout,), daemon=True).start()
        if not ready.wait(30):
            self.stop()
            pytest.fail("redis-server did not start:\n" + "".join(output))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def own_redis(tmp_path: Path, unused_port: int) -> Iterator[OwnRedis]:
    require_tool("redis-server", "a Redis of the test's own, to restart")
    server = OwnRedis(tmp_path, unused_port, "pw-" + uuid.uuid4().hex)
    register_secret(server.password, "own_redis password")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_restart_is_survived_by_the_same_backend(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{own_redis.password}@127.0.0.1:{own_redis.port}/0"
    backend = RedisBackend(url, expires=None)
    try:
        backend.store(success("before", "kept"))
        assert backend.incr("c") == 1
        assert backend.wait_for("before", timeout=5).result == "kept"  # a pooled pub/sub conn

        own_redis.stop()
        for attempt in (
            lambda: backend.store(success("during")),
            lambda: backend.get_meta("before"),
            lambda: backend.wait_for("before", timeout=1),
        ):
            started = time.monotonic()
            with pytest.raises(BackendError) as info:
                attempt()
            assert time.monotonic() - started < 5, "a store while down must fail fast"
            assert own_redis.password not in str(info.value)
            assert str(own_redis.port) in str(info.value)

        own_redis.start()  # same port, same directory: the append-only file comes back
        assert backend.get_meta("before").result == "kept"
        backend.store(success("after", "new"))
        assert backend.get_meta("after").result == "new"
        assert backend.incr("c") == 2
        task_id = str(uuid.uuid4())
        threading.Timer(0.05, lambda: backend.store(success(task_id, "woke"))).start()
        assert backend.wait_for(task_id, timeout=10).result == "woke"
        assert asyncio.run(backend.await_for("after", timeout=5)).result == "new"
    finally:
        backend.close()
    assert own_redis.password not in caplog.text
    assert own_redis.password not in repr(backend)


def test_the_first_wait_after_a_restart_does_not_fail(own_redis: OwnRedis) -> None:
    """The thread's held subscriber connection died with the server: the next wait replaces
    it and subscribes again instead of raising."""
    url = f"redis://:{own_redis.password}@127.0.0.1:{own_redis.port}/0"
    backend = RedisBackend(url, expires=None)
    try:
        assert backend.wait_for("a", timeout=0.2).status == states.PENDING  # holds a subscriber
        own_redis.stop()
        own_redis.start()
        assert backend.wait_for("b", timeout=0.2).status == states.PENDING
        task_id = str(uuid.uuid4())
        store = threading.Timer(0.05, lambda: backend.store(success(task_id, "woke")))
        store.start()
        assert backend.wait_for(task_id, timeout=10).result == "woke"
        store.join(10)  # its EXEC reply may still be on the way: close() must not cut it
    finally:
        backend.close()


def test_a_wait_after_a_restart_and_a_ready_get_does_not_fail(own_redis: OwnRedis) -> None:
    """After a restart, a ready ``get()`` writes its SUBSCRIBE on the dead connection (the
    write succeeds, the GET answers, nothing is read): the next wait's write then fails on
    that socket, and the wait carries on on a new connection instead of raising."""
    url = f"redis://:{own_redis.password}@127.0.0.1:{own_redis.port}/0"
    backend = RedisBackend(url, expires=None)
    try:
        assert backend.wait_for("a", timeout=0.2).status == states.PENDING  # holds a subscriber
        backend.store(success("ready", "kept"))
        own_redis.stop()
        own_redis.start()
        assert AsyncResult[Any]("ready", backend).get(timeout=5) == "kept"
        assert backend.wait_for("b", timeout=0.2).status == states.PENDING
        assert AsyncResult[Any]("ready", backend).get(timeout=5) == "kept"
        task_id = str(uuid.uuid4())
        store = threading.Timer(0.05, lambda: backend.store(success(task_id, "woke")))
        store.start()
        assert AsyncResult[Any](task_id, backend).get(timeout=10) == "woke"
        store.join(10)
    finally:
        backend.close()


def test_unix_socket_url(own_redis: OwnRedis) -> None:
    url = f"unix://:{own_redis.password}@{own_redis.socket_path}?db=2"
    # Directly: the results registry does not map unix:// to this backend (yet).
    backend = RedisBackend(url, key_prefix="unix-test:")
    try:
        backend.store(success("u", 1))
        assert backend.wait_for("u", timeout=5).result == 1
        assert "unix:" in repr(backend) and own_redis.password not in repr(backend)
    finally:
        backend.close()


def test_backend_close_then_reuse(make_backend: Callable[..., RedisBackend]) -> None:
    backend = make_backend()
    backend.store(success("a", 1))
    backend.close()
    assert backend.get_meta("a").result == 1  # the pool reconnects on use
    assert os.getpid() == backend._pid
