"""Celery's worker signals from a real worker (in a thread, in-memory broker): senders, arguments,
order, and what receivers can change; plus remote control under Celery's argument names.

Each test connects its receivers strongly and disconnects them at the end, and waits on events
the signals themselves set, with deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import signal as posix_signal
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from celeriac import Celeriac, TaskRevokedError, signals
from celeriac.context import Request
from celeriac.errors import DecodeError, NotRegistered
from celeriac.protocol.message import Message
from celeriac.routing import Queue
from celeriac.signals import Signal
from celeriac.testing import memory_app, worker_thread
from celeriac.transports.base import Delivery, Outgoing
from celeriac.worker.consumer import Consumer
from celeriac.worker.steps import Heartbeat
from celeriac.worker.worker import Worker

WAIT = 10.0


class Recorder:
    """Receivers that keep ``(signal name, sender, kwargs)`` and an event per signal."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.events: dict[str, threading.Event] = {}
        self.connected: list[tuple[Signal, Callable[..., None]]] = []

    def listen(self, *sigs: Signal) -> None:
        for sig in sigs:
            receiver = self._receiver(sig.name, self.events.setdefault(sig.name, threading.Event()))
            sig.connect(receiver, weak=False)
            self.connected.append((sig, receiver))

    def _receiver(self, name: str, done: threading.Event) -> Callable[..., None]:
        # a closure, not default arguments: task_unknown itself sends name= and id=
        def receiver(sender: Any, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            with self.lock:
                self.calls.append((name, sender, kwargs))
            done.set()

        return receiver

    def wait(self, name: str) -> None:
        assert self.events[name].wait(WAIT), f"{name} was not sent; got {self.names()}"

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _, _ in self.calls]

    def of(self, name: str) -> list[tuple[Any, dict[str, Any]]]:
        with self.lock:
            return [(sender, kwargs) for n, sender, kwargs in self.calls if n == name]

    def close(self) -> None:
        for sig, receiver in self.connected:
            sig.disconnect(receiver)


@contextmanager
def recording(*sigs: Signal) -> Iterator[Recorder]:
    recorder = Recorder()
    recorder.listen(*sigs)
    try:
        yield recorder
    finally:
        recorder.close()


def test_the_worker_life_signals_in_celerys_order(app: Celeriac) -> None:
    with recording(
        signals.celeryd_init,
        signals.worker_init,
        signals.celeryd_after_setup,
        signals.worker_ready,
        signals.worker_shutting_down,
        signals.worker_shutdown,
    ) as rec:
        with worker_thread(app, hostname="w1@example.com", concurrency=1) as worker:
            rec.wait("worker_ready")
        rec.wait("worker_shutdown")
    assert rec.names() == [
        "celeryd_init",
        "worker_init",
        "celeryd_after_setup",
        "worker_ready",
        "worker_shutting_down",
        "worker_shutdown",
    ]
    [(sender, init)] = rec.of("celeryd_init")
    assert sender == "w1@example.com"
    assert init["instance"] is worker and init["conf"] is app.conf
    assert init["options"]["hostname"] == "w1@example.com"
    assert init["options"]["concurrency"] == 1
    [(sender, after)] = rec.of("celeryd_after_setup")
    assert sender == "w1@example.com" and after["instance"] is worker
    [(consumer, _)] = rec.of("worker_ready")
    assert isinstance(consumer, Consumer)
    assert consumer.controller is worker and consumer.app is app
    [(sender, down)] = rec.of("worker_shutting_down")
    assert sender == "w1@example.com"
    assert down == {"sig": None, "how": "Warm", "exitcode": 0}  # stopped from code
    assert [s for s, _ in rec.of("worker_shutdown")] == [worker]


def test_celeryd_init_configures_one_node_and_after_setup_adds_a_queue(app: Celeriac) -> None:
    seen: list[str] = []

    @app.task(name="extra.touch")
    def touch() -> str:
        seen.append("ran")
        return "ok"

    def tune(conf: Any, **kwargs: Any) -> None:
        conf.worker_prefetch_multiplier = 7

    def add_queue(instance: Worker, **kwargs: Any) -> None:
        instance.queues.append(Queue("extra"))

    signals.celeryd_init.connect(tune, sender="w1@example.com", weak=False)
    signals.celeryd_after_setup.connect(add_queue, sender="w1@example.com", weak=False)
    try:
        with worker_thread(app, hostname="w2@example.com") as other:
            assert other.prefetch_multiplier == 4  # another node: untouched
        with worker_thread(app, hostname="w1@example.com", queues=["celery"]) as worker:
            assert worker.prefetch_multiplier == 7
            assert touch.apply_async(queue="extra").get(timeout=WAIT) == "ok"
    finally:
        signals.celeryd_init.disconnect(tune, sender="w1@example.com")
        signals.celeryd_after_setup.disconnect(add_queue, sender="w1@example.com")
    assert seen == ["ran"]


def test_message_signals_received_unknown_rejected(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    sigs = (signals.task_received, signals.task_prerun, signals.task_unknown, signals.task_rejected)
    with recording(*sigs) as rec, worker_thread(app) as worker:
        result = add.delay(2, 3)
        assert result.get(timeout=WAIT) == 5
        unknown = app.send_task("no.such.task", args=(1,))
        rec.wait("task_unknown")
        pickled = Message(
            headers={"task": add.name, "id": uuid.uuid4().hex, "lang": "py"},
            body=b"\x80\x04N.",
            content_type="application/x-python-serialize",
            content_encoding="binary",
        )
        app.producer.send([Outgoing(pickled, "", "celery")])
        rec.wait("task_rejected")
        consumer = worker.consumer
    names = rec.names()
    assert names.index("task_received") < names.index("task_prerun")
    [(sender, received)] = rec.of("task_received")
    assert sender is consumer
    request = received["request"]
    assert isinstance(request, Request)
    assert (request.id, request.task, request.args) == (result.id, add.name, (2, 3))
    [(sender, missing)] = rec.of("task_unknown")
    assert sender is consumer
    assert (missing["name"], missing["id"]) == ("no.such.task", unknown.id)
    assert isinstance(missing["exc"], NotRegistered)
    assert isinstance(missing["message"], Delivery)
    [(sender, rejected)] = rec.of("task_rejected")  # the unknown task was not "rejected"
    assert sender is consumer
    assert isinstance(rejected["exc"], DecodeError)
    assert "not in accept_content" in str(rejected["exc"])
    assert isinstance(rejected["message"], Delivery)


def test_task_revoked_always_gets_its_request(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with recording(signals.task_revoked) as rec, worker_thread(app) as worker:
        expired = add.apply_async((1, 1), expires=-1)
        with pytest.raises(TaskRevokedError):
            expired.get(timeout=WAIT)
        task_id = uuid.uuid4().hex
        app.control.broadcast("revoke", arguments={"task_id": task_id})  # Celery's argument
        wait_for(lambda: task_id in worker.state.revoked, "the revoke")
        revoked = add.apply_async((2, 2), task_id=task_id)
        with pytest.raises(TaskRevokedError):
            revoked.get(timeout=WAIT)
    by_id = {kw["request"].id: (sender, kw) for sender, kw in rec.of("task_revoked")}
    sender, first = by_id[expired.id]
    assert sender is add
    assert first["expired"] is True and first["terminated"] is False and first["signum"] is None
    assert first["request"].args == (1, 1)
    sender, second = by_id[task_id]
    assert second["expired"] is False and second["request"].args == (2, 2)


def test_task_revoked_for_a_terminated_async_task() -> None:
    app = memory_app("terminate")
    started = threading.Event()

    @app.task
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(30)

    try:
        with recording(signals.task_revoked) as rec, worker_thread(app, pool="asyncio"):
            result = sleepy.delay()
            assert started.wait(WAIT)
            app.control.revoke(result.id, terminate=True)
            with pytest.raises(TaskRevokedError):
                result.get(timeout=WAIT)
            rec.wait("task_revoked")
        [(sender, kwargs)] = rec.of("task_revoked")
        assert sender is sleepy
        assert kwargs["terminated"] is True and kwargs["expired"] is False
        assert kwargs["signum"] is None  # cancelled on the loop: no signal involved
        assert kwargs["request"].id == result.id
    finally:
        app.close()


def test_heartbeat_sent_at_each_beat_unless_without_heartbeat() -> None:
    app = memory_app("beat", worker_lease_renewal_interval=0.02)
    try:
        with recording(signals.heartbeat_sent) as rec:
            with worker_thread(app):
                rec.wait("heartbeat_sent")
            assert all(isinstance(sender, Heartbeat) for sender, _ in rec.of("heartbeat_sent"))
        with recording(signals.heartbeat_sent) as rec:
            with worker_thread(app, without_heartbeat=True) as worker:
                [beat] = [c for c in worker.components if isinstance(c, Heartbeat)]
                assert worker._loop is not None
                # one beat, run to its end on the worker's loop: leases renewed, no signal
                done = asyncio.run_coroutine_threadsafe(beat.beat(worker), worker._loop)
                done.result(WAIT)
            assert rec.of("heartbeat_sent") == []
    finally:
        app.close()


def test_rate_limit_and_revoke_under_celerys_argument_names(app: Celeriac) -> None:
    @app.task(name="shop.add")
    def add(x: int, y: int) -> int:
        return x + y

    with worker_thread(app) as worker:
        assert worker.consumer is not None
        limiter = worker.consumer.rate_limiter
        app.control.broadcast(
            "rate_limit", arguments={"task_name": "shop.add", "rate_limit": "10/m"}
        )
        wait_for(lambda: limiter.rate("shop.add") == pytest.approx(10 / 60), "the rate limit")
        app.control.rate_limit("shop.add", "5/s")  # celeriac's own client keeps working
        wait_for(lambda: limiter.rate("shop.add") == 5.0, "the second rate limit")
        app.control.broadcast("rate_limit", arguments={"task_name": "shop.add", "rate_limit": 0})
        wait_for(lambda: limiter.rate("shop.add") is None, "the rate limit removed")
        # an unknown task or a bad rate changes nothing (and stops nothing)
        app.control.broadcast("rate_limit", arguments={"task_name": "x.y", "rate_limit": "1/s"})
        app.control.broadcast(
            "rate_limit", arguments={"task_name": "shop.add", "rate_limit": "fast"}
        )
        app.control.broadcast("revoke", arguments={"task_id": ["a", "b"]})
        wait_for(lambda: "b" in worker.state.revoked, "the revoke")
        assert "a" in worker.state.revoked
        assert limiter.rate("shop.add") is None and limiter.rate("x.y") is None
        assert add.delay(1, 2).get(timeout=WAIT) == 3


def test_a_worker_signal_sent_by_the_os_is_named(app: Celeriac) -> None:
    """SIGTERM's handler passes its name: what a receiver of worker_shutting_down sees."""
    with recording(signals.worker_shutting_down) as rec, worker_thread(app) as worker:
        loop = worker._loop
        assert loop is not None
        loop.call_soon_threadsafe(worker.request_stop, False, posix_signal.SIGTERM.name)
        rec.wait("worker_shutting_down")
        loop.call_soon_threadsafe(worker.request_stop, False, posix_signal.SIGINT.name)
        wait_for(lambda: len(rec.of("worker_shutting_down")) == 2, "the cold shutdown")
    first, second = (kw for _, kw in rec.of("worker_shutting_down"))
    assert first == {"sig": "SIGTERM", "how": "Warm", "exitcode": 0}
    assert second == {"sig": "SIGINT", "how": "Cold", "exitcode": 0}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_settings_that_do_nothing_here_are_logged_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = memory_app("notes", event_serializer="msgpack")
    try:
        with caplog.at_level(logging.WARNING, logger="celeriac.worker"), worker_thread(app):
            pass
    finally:
        app.close()
    notes = [r for r in caplog.records if "event_serializer" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.WARNING
    assert "is not in effect yet" in notes[0].getMessage()
