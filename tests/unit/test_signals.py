"""Signals: connecting, filtering by sender, weak references, isolation of failing receivers."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from typing import Any

import pytest

from celeriac import signals
from celeriac.signals import Signal


class Sender:
    def __init__(self, name: str = "shop.add") -> None:
        self.name = name


class Listener:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def on_signal(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "listener"


@pytest.fixture
def sig() -> Signal:
    return Signal("test_signal", providing_args=("x",))


def test_connect_send_disconnect(sig: Signal) -> None:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 42

    assert sig.connect(receiver) is receiver
    sender = Sender()
    assert sig.send(sender, x=1) == [(receiver, 42)]
    assert calls == [{"signal": sig, "sender": sender, "x": 1}]
    assert sig.receivers == [receiver]
    assert sig.disconnect(receiver) is True
    assert sig.disconnect(receiver) is False
    assert sig.send(sender, x=2) == []
    assert len(calls) == 1


def test_decorator_forms(sig: Signal) -> None:
    seen: list[str] = []

    @sig.connect
    def bare(**kwargs: Any) -> None:
        seen.append("bare")

    @sig.connect(weak=False)
    def called(**kwargs: Any) -> None:
        seen.append("called")

    sig.send(None)
    assert seen == ["bare", "called"]
    assert callable(bare)
    assert callable(called)


def test_sender_filter_by_identity_and_by_name(sig: Signal) -> None:
    add, mul = Sender("shop.add"), Sender("shop.mul")
    got: list[tuple[str, Any]] = []

    @sig.connect(sender=add)
    def only_add(sender: Any, **kwargs: Any) -> None:
        got.append(("identity", sender))

    @sig.connect(sender="shop.mul")
    def only_mul(sender: Any, **kwargs: Any) -> None:
        got.append(("name", sender))

    @sig.connect
    def every(sender: Any, **kwargs: Any) -> None:
        got.append(("any", sender))

    sig.send(add)
    sig.send(mul)
    sig.send(Sender("shop.add"))  # same name, another object: not `add`
    assert got == [
        ("identity", add),
        ("any", add),
        ("name", mul),
        ("any", mul),
        ("any", got[-1][1]),
    ]
    assert sig.has_receivers(add)
    assert not Signal("empty").has_receivers()
    # disconnecting needs the sender it was connected with
    assert sig.disconnect(only_add) is False
    assert sig.disconnect(only_add, sender=add) is True
    assert sig.disconnect(only_mul, sender="shop.mul") is True


def test_function_receiver_is_weak(sig: Signal) -> None:
    calls: list[int] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(1)

    sig.connect(receiver)
    sig.send(None)
    del receiver
    gc.collect()
    assert sig.receivers == []
    assert sig.send(None) == []
    assert calls == [1]


def test_bound_method_receiver_is_weak_and_does_not_keep_its_object(sig: Signal) -> None:
    listener = Listener()
    sig.connect(listener.on_signal)  # a fresh bound method each access: WeakMethod is needed
    assert [result for _r, result in sig.send(None)] == ["listener"]
    assert len(listener.calls) == 1
    del listener
    gc.collect()
    assert sig.receivers == []
    assert sig.send(None) == []


def test_strong_receiver_survives(sig: Signal) -> None:
    calls: list[int] = []
    sig.connect(lambda **kwargs: calls.append(1), weak=False)
    gc.collect()
    sig.send(None)
    assert calls == [1]


def test_connected_sender_is_not_kept_alive(sig: Signal) -> None:
    sender = Sender()

    @sig.connect(sender=sender, weak=False)
    def receiver(**kwargs: Any) -> None:
        pass

    assert sig.receivers == [receiver]
    del sender
    gc.collect()
    assert sig.receivers == []


def test_dispatch_uid_and_same_receiver_dedupe(sig: Signal) -> None:
    calls: list[str] = []

    def first(**kwargs: Any) -> None:
        calls.append("first")

    def second(**kwargs: Any) -> None:
        calls.append("second")

    sig.connect(first, dispatch_uid="audit")
    sig.connect(second, dispatch_uid="audit")  # same uid: ignored
    sig.connect(first)  # no uid: keyed by the function itself, a separate connection
    sig.connect(first)  # ... made once
    sig.send(None)
    assert calls == ["first", "first"]
    assert sig.disconnect(dispatch_uid="audit") is True
    calls.clear()
    sig.send(None)
    assert calls == ["first"]


def test_raising_receiver_is_logged_and_does_not_stop_others(
    sig: Signal, caplog: pytest.LogCaptureFixture
) -> None:
    error = ValueError("boom")

    def broken(**kwargs: Any) -> None:
        raise error

    def fine(**kwargs: Any) -> str:
        return "ok"

    sig.connect(broken)
    sig.connect(fine)
    with caplog.at_level(logging.ERROR, logger="celeriac.signals"):
        responses = sig.send(None)
    assert responses == [(broken, error), (fine, "ok")]
    [record] = caplog.records
    assert "test_signal" in record.getMessage()
    assert "broken" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is error


def test_async_receiver_is_refused(sig: Signal) -> None:
    async def receiver(**kwargs: Any) -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        sig.connect(receiver)


def test_disconnect_needs_receiver_or_uid(sig: Signal) -> None:
    with pytest.raises(TypeError):
        sig.disconnect()


def test_thread_safety_connect_send_disconnect_concurrently(sig: Signal) -> None:
    threads_n, rounds = 8, 200
    barrier = threading.Barrier(threads_n)
    counts = [0] * threads_n
    errors: list[BaseException] = []
    churn: list[int] = []
    keep: list[Any] = []

    def make_receiver(index: int) -> Any:
        def receiver(**kwargs: Any) -> None:
            counts[index] += 1  # only this thread's own sends can reach it: see sender filter

        return receiver

    def work(index: int) -> None:
        try:
            own = Sender(f"sender-{index}")
            receiver = make_receiver(index)
            keep.extend((receiver, own))  # both held weakly by the signal: the test holds them
            barrier.wait()
            for _ in range(rounds):
                sig.connect(receiver, sender=own)

                def scratch(**kwargs: Any) -> None:
                    churn.append(1)

                sig.connect(scratch, weak=False)  # churn: connect and drop other receivers
                sig.send(own)
                sig.disconnect(scratch)
            sig.send(own)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to interleave the calls
    try:
        for t in workers:
            t.start()
        for t in workers:
            t.join(30)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    # each thread's receiver was connected once (later connects were no-ops) and heard each of
    # its own sends, and no other thread's
    assert counts == [rounds + 1] * threads_n
    assert len(sig.receivers) == threads_n
    assert len(churn) >= threads_n * rounds  # each send reached at least its own scratch


def test_celery_signals_are_defined_with_their_arguments() -> None:
    assert signals.task_prerun.providing_args == {"task_id", "task", "args", "kwargs"}
    assert signals.task_postrun.providing_args == {
        "task_id",
        "task",
        "args",
        "kwargs",
        "retval",
        "state",
    }
    assert signals.task_success.providing_args == {"result", "runtime"}
    assert signals.task_failure.providing_args == {
        "task_id",
        "exception",
        "args",
        "kwargs",
        "traceback",
        "einfo",
    }
    assert signals.task_retry.providing_args == {"request", "reason", "einfo"}
    assert signals.task_revoked.providing_args == {"request", "terminated", "signum", "expired"}
    assert signals.task_rejected.providing_args == {"message", "exc"}
    for name in ("worker_init", "worker_ready", "worker_shutdown", "worker_process_init"):
        sig = getattr(signals, name)
        assert isinstance(sig, Signal)
        assert sig.name == name
        assert sig.__doc__
    assert set(signals.__all__) <= set(vars(signals))
