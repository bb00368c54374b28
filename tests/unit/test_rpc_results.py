"""``rpc://`` without a broker: the reply table, the record layout, the send-side plumbing
(every send carries ``reply_to``), and the limits (chords refused before anything is sent).
The AMQP round trips are in tests/integration/test_rpc_backend.py."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from celeriac import Celeriac, chord, group, states
from celeriac.context import Request, running
from celeriac.errors import ImproperlyConfigured
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.results.rpc.backend import CHORD_LIMIT, RPCBackend
from celeriac.results.rpc.replies import Replies
from celeriac.testing import memory_app

BROKER = "amqp://guest:secret-pw@127.0.0.1:5672//"


def ok(task_id: str, value: Any = 1) -> ResultMeta:
    return ResultMeta(task_id, states.SUCCESS, value)


# -- the reply table ------------------------------------------------------------------------------
def test_wait_returns_a_record_that_came_before_the_wait() -> None:
    replies = Replies()
    replies.put(ok("a", 5))
    assert replies.wait("a", 0.01).result == 5


def test_wait_wakes_on_a_put_from_another_thread() -> None:
    replies = Replies()
    threading.Timer(0.05, replies.put, (ok("a", 7),)).start()
    started = time.monotonic()
    assert replies.wait("a", 5).result == 7
    assert time.monotonic() - started < 2
    assert replies.waiting() == 0


def test_wait_times_out_pending_and_leaves_no_waiter() -> None:
    replies = Replies()
    assert replies.wait("nobody", 0.02).status == states.PENDING
    assert replies.waiting() == 0


def test_a_state_that_is_not_ready_does_not_wake_nor_replace_a_ready_one() -> None:
    replies = Replies()
    replies.put(ResultMeta("a", states.STARTED))
    assert replies.wait("a", 0.02).status == states.STARTED  # not ready: timed out
    replies.put(ok("a"))
    replies.put(ResultMeta("a", states.RETRY))  # a late message from another connection
    assert replies.get("a").status == states.SUCCESS


def test_many_waiters_each_woken_by_its_own_task() -> None:
    replies = Replies()
    results: dict[str, Any] = {}

    def wait(task_id: str) -> None:
        results[task_id] = replies.wait(task_id, 5).result

    threads = [threading.Thread(target=wait, args=(f"t{i}",)) for i in range(50)]
    for thread in threads:
        thread.start()
    for i in range(50):
        replies.put(ok(f"t{i}", i))
    for thread in threads:
        thread.join(5)
    assert results == {f"t{i}": i for i in range(50)}
    assert replies.waiting() == 0


def test_async_wait_and_its_timeout_and_cancel() -> None:
    async def main() -> None:
        replies = Replies()
        loop = asyncio.get_running_loop()
        loop.call_later(
            0.02, lambda: threading.Thread(target=replies.put, args=(ok("a", 3),)).start()
        )
        assert (await replies.await_("a", 5)).result == 3
        assert (await replies.await_("b", 0.02)).status == states.PENDING
        task = asyncio.create_task(replies.await_("c", None))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert replies.waiting() == 0

    asyncio.run(main())


def test_the_table_is_bounded_but_keeps_what_is_awaited() -> None:
    replies = Replies(max_size=2)
    replies.put(ResultMeta("kept", states.STARTED))
    waiter = threading.Thread(target=replies.wait, args=("kept", 5))
    waiter.start()
    deadline = time.monotonic() + 10
    while not replies.waiting():  # the waiter is registered (bounded: a hang names itself)
        assert time.monotonic() < deadline, "the waiting thread never registered"
        time.sleep(0.001)
    for i in range(5):
        replies.put(ok(f"x{i}"))
    assert replies.find("kept") is not None  # awaited: not dropped
    replies.put(ok("kept"))
    waiter.join(5)
    replies.put(ok("y"))
    assert len(replies) <= 3
    assert replies.find("x0") is None


# -- the record ----------------------------------------------------------------------------------
def test_reply_to_is_not_stored_when_unset_and_old_records_still_read() -> None:
    assert "reply_to" not in ok("a").to_dict()
    assert ResultMeta("a", reply_to="q").to_dict()["reply_to"] == "q"
    assert ResultMeta.from_dict({"task_id": "a", "status": "SUCCESS"}).reply_to is None


# -- the backend without a broker -----------------------------------------------------------------
def backend(**options: Any) -> RPCBackend:
    return RPCBackend("rpc://", broker_url=BROKER, **options)


def test_rpc_url_without_host_uses_the_amqp_broker_and_hides_its_password() -> None:
    made = backend()
    assert "secret-pw" not in repr(made)
    assert "127.0.0.1:5672" in repr(made)
    own = RPCBackend("rpc://u:pw-2@rabbit:5673/vh", broker_url="redis://x")
    assert "rabbit:5673" in repr(own) and "pw-2" not in repr(own)
    pair = RPCBackend("rpc://a:1//;rpc://b:2//")
    assert [t.host for t in pair._targets] == ["a", "b"]
    tuned = RPCBackend("rpc://?heartbeat=7", broker_url=BROKER)
    assert tuned._targets[0].heartbeat == 7 and tuned._targets[0].host == "127.0.0.1"


def test_rpc_needs_a_rabbitmq_or_redis_broker_or_a_server_of_its_own() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"must be RabbitMQ .* or Redis") as caught:
        RPCBackend("rpc://", broker_url="sqlite:///x.db")
    assert "sqlite:///x.db" in str(caught.value)
    with pytest.raises(ImproperlyConfigured, match="unknown rpc:// option"):
        backend(prefetch=3)
    with pytest.raises(ImproperlyConfigured, match=r"do not apply: \['heartbeat'\]"):
        RPCBackend("rpc://", broker_url="redis://127.0.0.1:6379/0", heartbeat=5)
    with pytest.raises(ImproperlyConfigured, match="database"):
        RPCBackend("rpc://", broker_url="redis://127.0.0.1:6379/x")
    over_pyamqp = RPCBackend("rpc://", broker_url="pyamqp://guest:pw-3@127.0.0.1:5672//")
    assert over_pyamqp._targets[0].scheme == "amqp" and "pw-3" not in repr(over_pyamqp)


def test_replies_are_decoded_into_the_table() -> None:
    made = backend()
    content_type, encoding, body = made.serializers.dumps(
        {"task_id": "a", "status": "FAILURE", "result": exception_to_dict(KeyError("k"))}, "json"
    )
    made._on_reply(body, content_type, encoding)
    made._on_reply(b"not json", "application/json", "utf-8")  # logged and dropped
    meta = made.wait_for("a", 1)
    assert isinstance(meta.exception(), KeyError)
    assert made.get_meta("other").status == states.PENDING


def test_only_records_that_say_where_they_go_are_sent() -> None:
    made = backend()
    items = made._outgoing([ok("a"), ResultMeta("b", states.SUCCESS, 2, reply_to="q")])
    assert [(i[0], i[1]) for i in items] == [("q", "b")]
    body = made.serializers.loads(items[0][4], items[0][2], items[0][3], ("json",))
    assert body["status"] == "SUCCESS" and body["date_done"] and "reply_to" not in body


def test_chords_are_refused_and_groups_kept_locally() -> None:
    made = backend()
    with pytest.raises(NotImplementedError, match="redis:// or sqlite://"):
        made.join_chord("g", "m")
    with pytest.raises(NotImplementedError, match="chords"):
        made.incr("k")
    with pytest.raises(ImproperlyConfigured, match="chords"):
        made.check_send({"chord": {"task": "t"}, "chain": None})
    nested = [{"task": "t", "options": {}, "subtask_type": "chord"}]
    with pytest.raises(ImproperlyConfigured, match="chords"):
        made.check_send({"chord": None, "chain": nested})
    made.check_send({"chord": None, "chain": [{"task": "t", "options": {}}]})
    made.save_group("g", ["a", "b"])
    assert made.restore_group("g") == ["a", "b"]
    made.delete_group("g")
    assert made.restore_group("g") is None


# -- the send side -----------------------------------------------------------------------------
class FakeRPC(RPCBackend):
    """An rpc backend whose reply queue needs no broker."""

    @property
    def reply_to(self) -> str:
        return "celeriac.reply.test"


def rpc_app() -> Celeriac:
    app = memory_app("rpc")
    app._backend = FakeRPC("rpc://", broker_url=BROKER)
    app._backend_made = True
    return app


def test_every_send_carries_the_reply_queue_and_stores_do_not_pay_for_it() -> None:
    app = rpc_app()
    add = app.task(lambda x, y: x + y, name="add")  # type: ignore[call-overload]
    item, _ = app.prepare("add", (1, 2))
    assert item.message.properties["reply_to"] == "celeriac.reply.test"
    assert item.message.properties["correlation_id"] == item.message.id
    explicit, _ = app.prepare("add", (1, 2), reply_to="elsewhere")
    assert explicit.message.properties["reply_to"] == "elsewhere"
    sender = app._batch_sender("add", {}, datetime.now(UTC))
    assert sender is not None
    bulk = sender.outgoing("id-1", (1, 2), {})
    assert bulk.message.properties["reply_to"] == "celeriac.reply.test"
    # a task sent from a task reports to whoever sent the first one
    with running(Request(id="p", task="add", reply_to="celeriac.reply.caller")):
        child, _ = app.prepare("add", (1, 2))
    assert child.message.properties["reply_to"] == "celeriac.reply.caller"
    # a chain's next step, sent by the worker after its step ran: where that step's result went
    backend = app.backend
    assert isinstance(backend, RPCBackend)
    backend._outgoing([ResultMeta("step-1", states.SUCCESS, 3, reply_to="celeriac.reply.c2")])
    step, _ = app.prepare("add", (3, 4), parent_id="step-1")
    assert step.message.properties["reply_to"] == "celeriac.reply.c2"
    assert add.name == "add"

    store = memory_app("store")
    store.task(lambda: None, name="noop")  # type: ignore[call-overload]
    plain, _ = store.prepare("noop")
    assert plain.message.properties.get("reply_to") is None
    assert store._replies is False


def test_a_chord_fails_at_send_time_with_the_limit_and_sends_nothing() -> None:
    app = rpc_app()
    add = app.task(lambda x, y: x + y, name="add")  # type: ignore[call-overload]
    total = app.task(lambda xs: sum(xs), name="total")  # type: ignore[call-overload]
    with pytest.raises(ImproperlyConfigured) as caught:
        chord([add.s(1, 1), add.s(2, 2)], total.s()).apply_async()
    assert str(caught.value) == CHORD_LIMIT

    async def queued() -> int:
        transport = app.create_transport()
        await transport.connect()
        try:
            return await transport.size("celery")
        finally:
            await transport.close()

    assert asyncio.run(queued()) == 0
    result = group(add.s(1, 1), add.s(2, 2)).apply_async()  # a plain group is fine
    assert len(result.results) == 2
    assert asyncio.run(queued()) == 2
    assert app.backend is not None and app.backend.restore_group(result.id) is not None


def test_the_app_builds_rpc_from_its_broker_or_the_url() -> None:
    over_redis = Celeriac("x", broker="redis://:pw@127.0.0.1:6379/0", backend="rpc://")
    assert isinstance(over_redis.backend, RPCBackend)
    assert over_redis.backend._targets == []  # replies over the Redis broker
    assert repr(over_redis.backend) == "<RPCBackend redis://:***@127.0.0.1:6379/0>"
    own = Celeriac("x", broker="redis://127.0.0.1:6379/0", backend="rpc://guest:guest@rabbit//")
    assert isinstance(own.backend, RPCBackend)
    assert own.backend._targets[0].host == "rabbit"
