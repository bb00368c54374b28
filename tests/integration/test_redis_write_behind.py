"""Sync sends on Redis written ahead of their replies, on the real server
(:mod:`celeriac.transports.redis.writebehind`).

A ``.delay()`` loop stores every message, in order, with never more than ``confirm_window``
awaiting their replies; a publish Redis refuses after the send returned is raised by the next
flush, kept, and stored once Redis takes it; threads each keep their own window; a process
that exits without closing its app still stores what it sent; a bad ``confirm_window`` fails
at start-up naming it, and kombu's layout waits for each send.
Uses database 15 of the shared server under a key prefix private to each test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from worker_harness import wait_until

from celeriac import Celeriac, states
from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.results.base import ResultMeta
from celeriac.routing import Queue
from celeriac.transports.base import Outgoing
from celeriac.transports.redis import RedisTransport
from conftest import delete_redis_keys, json_task_message, require_service

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("Redis", 6379)
    name = f"celeriac-wb:{uuid.uuid4().hex[:12]}:"
    yield name
    delete_redis_keys(URL, name)


def make_app(prefix: str, url: str = URL, **options: Any) -> Celeriac:
    return Celeriac(
        "wb", broker=url, backend=None,
        broker_transport_options={"key_prefix": prefix, **options},
        task_publish_retry_policy={"max_retries": 0},
    )  # fmt: skip


def first_args(prefix: str, queue: str = "celery") -> list[int]:
    """The first argument of every message in ``queue``, in the order a worker gets them."""

    async def read() -> list[int]:
        transport = RedisTransport(URL, key_prefix=prefix)
        try:
            got = await transport.get([queue], 10_000, timeout=0)
            await transport.ack(got)
            return [int(json.loads(d.decode().body)[0][0]) for d in got]
        finally:
            await transport.close()

    return asyncio.run(read())


def outgoing(n: int) -> Outgoing:
    message = json_task_message(str(n), "t.n", unique=False)  # its id is n
    return Outgoing(message, "", "celery", wire=message.to_wire())


def stored(prefix: str) -> list[int]:
    """The ids of the messages stored in ``celery`` (sent by :func:`outgoing`), read without
    taking them."""
    client = redis.Redis.from_url(URL)
    try:
        values: list[bytes] = client.hvals(f"{prefix}q:celery:data")  # type: ignore[assignment]
    finally:
        client.close()
    return sorted(int(json.loads(v.split(b"\0", 3)[3])["headers"]["id"]) for v in values)


def behind_of(app: Celeriac) -> Any:
    """The calling thread's window (the producer's sync transport made it at the first send)."""
    transport = app.producer._transport
    assert isinstance(transport, RedisTransport)
    return transport._thread_conns.behind


def test_a_delay_loop_stores_every_message_in_order_within_its_window(prefix: str) -> None:
    app = make_app(prefix, confirm_window=8)
    try:
        most = 0
        for i in range(2_000):
            app.send_task("t.n", args=(i,))
            most = max(most, behind_of(app).outstanding)
        assert 0 < most <= 8
        app.producer.flush()
        assert behind_of(app).outstanding == 0
        assert first_args(prefix) == list(range(2_000))
    finally:
        app.close()


def test_a_publish_refused_after_the_send_returned_is_kept_and_stored_later(prefix: str) -> None:
    """A user who may not run scripts: Redis answers the publish with an error. The send
    (or, when the reply came later, the next flush) raises; nothing is lost: once the user
    may, the flush stores the message, once."""
    require_service("Redis", 6379)
    admin = redis.Redis.from_url(URL)
    user, password = f"wb-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
        commands=["+@all", "-evalsha", "-eval"],
    )  # fmt: skip
    declarer = make_app(prefix)
    app = make_app(prefix, url=f"redis://{user}:{password}@127.0.0.1:6379/15")
    try:
        declarer.send_task("t.n", args=(0,))  # declares the queue (the user could not)
        declarer.producer.flush()
        refused: TransportError | None = None
        try:
            app.send_task("t.n", args=(1,))
        except TransportError as exc:  # its reply was read within the call: not taken
            refused = exc
        taken = refused is None
        if taken:
            with pytest.raises(TransportError, match="could not be published"):
                app.producer.flush()
        else:
            assert "NOPERM" in str(refused) or "permission" in str(refused)
        assert first_args(prefix) == [0]
        admin.acl_setuser(user, commands=["+evalsha"])
        if taken:
            app.producer.flush()
        else:
            app.send_task("t.n", args=(1,))
            app.producer.flush()
        assert first_args(prefix) == [1]
    finally:
        app.close()
        declarer.close()
        admin.acl_deluser(user)
        admin.close()


@pytest.mark.parametrize("refusal", ["stale topology", "script flushed"])
def test_a_refused_send_of_a_quiet_thread_is_acted_on_without_another_send(
    prefix: str, refusal: str
) -> None:
    """One ``.delay()`` and then nothing more from that thread (a request that waits on its
    result): a publish Redis refused because the topology changed since the producer routed
    it, or because Redis lost the script, is routed or sent again by the reaper, unasked."""
    transport = RedisTransport(URL, key_prefix=prefix)
    other = RedisTransport(URL, key_prefix=prefix)
    try:
        asyncio.run(transport.declare_queue(Queue("celery")))
        transport.publish_sync([outgoing(0)])  # routes, caches the topology, writes behind
        transport.flush_sync()
        if refusal == "stale topology":
            asyncio.run(other.declare_queue(Queue("elsewhere")))  # a new topology version
        else:
            redis.Redis.from_url(URL).script_flush()
        transport.publish_sync([outgoing(1)])  # refused: only the reaper reads that now
        wait_until(lambda: len(stored(prefix)) == 2, 5, "the reaper to store the refused send")
        assert stored(prefix) == [0, 1]
        behind = transport._thread_conns.behind
        wait_until(lambda: behind.outstanding == 0, 5, "the reaper to read the last reply")
    finally:
        asyncio.run(transport.close())
        asyncio.run(other.close())


def test_each_thread_keeps_and_flushes_its_own_window(prefix: str) -> None:
    app = make_app(prefix)
    errors: list[BaseException] = []

    def send(start: int) -> None:
        try:
            for i in range(start, start + 500):
                app.send_task("t.n", args=(i,))
            app.producer.flush()  # this thread's sends
            assert behind_of(app).outstanding == 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n * 1000,)) for n in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        got = first_args(prefix)
        assert sorted(got) == [n * 1000 + i for n in range(3) for i in range(500)]
        for n in range(3):  # each thread's messages in its order
            mine = [i for i in got if i // 1000 == n]
            assert mine == sorted(mine)
    finally:
        app.close()


def test_a_process_that_exits_without_closing_its_app_stores_what_it_sent(prefix: str) -> None:
    script = textwrap.dedent(
        f"""
        from celeriac import Celeriac
        app = Celeriac("wb", broker={URL!r}, backend=None,
                       broker_transport_options={{"key_prefix": {prefix!r}}})
        for i in range(1000):
            app.send_task("t.n", args=(i,))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "could not be published" not in done.stderr
    assert first_args(prefix) == list(range(1000))


def test_a_bad_confirm_window_fails_naming_it_and_kombus_layout_waits() -> None:
    with pytest.raises(ImproperlyConfigured, match="confirm_window"):
        RedisTransport(URL, confirm_window="many")
    with pytest.raises(ImproperlyConfigured, match="confirm_window"):
        RedisTransport(URL, confirm_window=-1)
    assert RedisTransport(URL).sync_publish_window == 256
    assert RedisTransport(URL, confirm_window="0").sync_publish_window == 0
    assert RedisTransport(URL, layout="kombu").sync_publish_window == 0


def test_a_link_that_keeps_breaking_is_given_up_not_resent_in_a_loop(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection breaks, and breaks again once the window is sent anew (a Redis still
    loading its data does so): the window goes again once, then the send raises (the retry
    policy's turn), rather than resending the window on a new connection for ever."""
    transport = RedisTransport(URL, key_prefix=prefix)
    try:
        asyncio.run(transport.declare_queue(Queue("celery")))
        transport.publish_sync([outgoing(0)])
        transport.flush_sync()
        conn = transport._thread_conns.conn
        writes: list[int] = []
        write, read, handshake = conn.send_packed_command, conn.read_response, conn.on_connect
        shaking = [False]

        def counted(command: Any, *args: Any, **kwargs: Any) -> Any:
            packed = command if isinstance(command, bytes) else b"".join(command)
            writes.append(packed.count(b"EVALSHA"))
            return write(command, *args, **kwargs)

        def on_connect(*args: Any, **kwargs: Any) -> Any:
            shaking[0] = True
            try:
                return handshake(*args, **kwargs)
            finally:
                shaking[0] = False

        def broken(*args: Any, **kwargs: Any) -> Any:
            if shaking[0]:  # a new connection's handshake works: the link breaks after it
                return read(*args, **kwargs)
            raise redis.ConnectionError("the link broke again")

        monkeypatch.setattr(conn, "send_packed_command", counted)
        monkeypatch.setattr(conn, "read_response", broken)
        monkeypatch.setattr(conn, "on_connect", on_connect)
        monkeypatch.setattr(conn, "can_read", lambda timeout=0: True)
        # as a broken link's socket shows it: the send reads at once (see READ_AT)
        behind = transport._thread_conns.behind
        monkeypatch.setattr(behind, "_closed_by_server", lambda: True)
        with pytest.raises(TransportError, match="the link broke again"):
            transport.publish_sync([outgoing(1)])
        assert sum(writes) == 2  # the send, and the window once more on a new connection
        assert transport._thread_conns.behind.outstanding == 0
    finally:
        monkeypatch.undo()
        asyncio.run(transport.close())


def test_threads_that_come_and_go_never_reach_a_pool_cap(prefix: str) -> None:
    """A thread per request: each thread's own connections (its sends, its result stores)
    are made apart from the pools, whose caps count every connection they make; 150 threads
    over a process's life against a result backend capped at 100 (its default) all work."""
    app = Celeriac(
        "wb", broker=URL, backend=URL,
        broker_transport_options={"key_prefix": prefix},
        result_backend_transport_options={"key_prefix": prefix},
    )  # fmt: skip
    errors: list[BaseException] = []
    backend = app.backend
    assert backend is not None

    def request(n: int) -> None:
        try:
            app.send_task("t.n", args=(n,))
            app.producer.flush()
            backend.store(ResultMeta(f"{prefix}{n}", states.SUCCESS, n))
        except BaseException as exc:
            errors.append(exc)

    try:
        for n in range(150):
            thread = threading.Thread(target=request, args=(n,))
            thread.start()
            thread.join(10)
        assert errors == []
        assert sorted(first_args(prefix)) == list(range(150))
        assert backend.get_meta(f"{prefix}149").result == 149
    finally:
        app.close()
