"""Sync sends on RabbitMQ are pipelined (:mod:`celeriac.app.pipeline`), on the real broker.

Every pipelined send arrives, in order; ``confirm_window: 0`` makes each send wait for its own
confirm; a full window makes the next send wait until RabbitMQ confirms again (RabbitMQ's memory
alarm blocks publishers: serial, as it stops every publisher of the server); a publish that
fails is raised by the next flush, kept, and published once the broker can take it; a process
that exits without closing its app still delivers what it sent.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import amqp_broker
from celeriac import Celeriac
from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.routing import Exchange, Queue
from celeriac.transports.amqp import AMQPTransport
from conftest import require_service

pytestmark = pytest.mark.amqp


@pytest.fixture
def queue() -> Iterator[str]:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    name = f"pipe-{uuid.uuid4().hex[:8]}"
    yield name
    amqp_broker.delete({name, f"{name}.dlq"}, {f"{name}-x"})


def make_app(queue: str, **options: Any) -> Celeriac:
    return Celeriac(
        "pipe", broker=amqp_broker.URL, backend=None, task_default_queue=queue,
        broker_transport_options=options,
    )  # fmt: skip


def on_broker(queue: str, drain: bool = False) -> list[int] | int:
    """The queue's size, or (``drain``) the first argument of every message in it, in order."""

    async def read() -> list[int] | int:
        transport = AMQPTransport(amqp_broker.URL)
        try:
            if not drain:
                return await transport.size(queue)
            seen: list[int] = []
            while True:
                got = await transport.get([queue], 500, timeout=1)
                if not got:
                    return seen
                seen += [json.loads(d.decode().body)[0][0] for d in got]
                await transport.ack(got)
        finally:
            await transport.close()

    result: list[int] | int = amqp_broker.in_thread(read)
    return result


def test_every_pipelined_send_arrives_in_order(queue: str) -> None:
    app = make_app(queue)
    try:
        for i in range(2000):
            app.send_task("pipe.t", (i,))
        app.producer.flush(timeout=30)
        assert on_broker(queue, drain=True) == list(range(2000))
    finally:
        app.close()


def test_with_confirm_window_zero_a_send_returns_once_confirmed(queue: str) -> None:
    app = make_app(queue, confirm_window=0)
    try:
        for expected in (1, 2, 3):
            app.send_task("pipe.t", (expected,))
            assert on_broker(queue) == expected  # no flush: the send itself waited
    finally:
        app.close()


def test_a_failed_publish_is_raised_then_published_once_the_broker_takes_it(queue: str) -> None:
    exchange = Exchange(f"{queue}-x", "direct")
    target = Queue(queue, exchange=exchange, routing_key="k")
    app = make_app(queue)
    app.conf.task_queues = [target]
    app.conf.task_publish_retry = False
    try:
        app.send_task("pipe.t", (0,), exchange=exchange.name, routing_key="k")
        app.producer.flush(timeout=30)
        amqp_broker.delete((), {exchange.name})  # the send below meets a missing exchange
        app.send_task("pipe.t", (1,), exchange=exchange.name, routing_key="k")  # returns at once
        with pytest.raises(TransportError, match="could not be published"):
            app.producer.flush(timeout=30)

        async def declare_again() -> None:
            transport = AMQPTransport(amqp_broker.URL)
            try:
                await transport.declare_queue(target)
            finally:
                await transport.close()

        amqp_broker.in_thread(declare_again)
        app.producer.flush(timeout=30)  # kept: published now
        assert on_broker(queue, drain=True) == [0, 1]
    finally:
        app.close()


def test_a_process_that_exits_without_closing_its_app_delivers_what_it_sent(queue: str) -> None:
    script = textwrap.dedent(f"""
        from celeriac import Celeriac
        app = Celeriac("pipe", broker={amqp_broker.URL!r}, backend=None,
                       task_default_queue={queue!r})
        for i in range(500):
            app.send_task("pipe.t", (i,))
        # no app.close(), no flush: the interpreter's exit flushes the window
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert on_broker(queue, drain=True) == list(range(500))


@pytest.mark.serial
def test_a_full_window_makes_the_next_send_wait_until_rabbitmq_confirms(queue: str) -> None:
    """RabbitMQ's memory alarm (watermark 0) blocks publishing connections: no confirm comes
    back, so four sends fill a window of four and the fifth waits until the alarm clears."""
    app = make_app(queue, confirm_window=4)
    watermark = amqp_broker.rabbitmqctl(
        "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."
    ).strip()
    fifth_sent = threading.Event()
    try:
        app.send_task("pipe.t", (0,))
        app.producer.flush(timeout=30)  # connected and declared before the alarm
        amqp_broker.rabbitmqctl("set_vm_memory_high_watermark", "0")
        for i in range(1, 5):
            app.send_task("pipe.t", (i,))  # the window takes them: these return

        def fifth() -> None:
            app.send_task("pipe.t", (5,))
            fifth_sent.set()

        sender = threading.Thread(target=fifth, daemon=True)
        sender.start()
        assert not fifth_sent.wait(2.0), "a send went past a full window"
        assert app.producer._pipeline is not None
        assert app.producer._pipeline.outstanding == 4
    finally:
        amqp_broker.rabbitmqctl("set_vm_memory_high_watermark", watermark)
    try:
        assert fifth_sent.wait(30), "the alarm cleared but the waiting send never went out"
        app.producer.flush(timeout=30)
        assert on_broker(queue, drain=True) == [0, 1, 2, 3, 4, 5]
    finally:
        app.close()


@pytest.mark.parametrize("value", [-1, "many", None])
def test_a_bad_confirm_window_fails_at_start_naming_the_option(value: object) -> None:
    with pytest.raises(ImproperlyConfigured, match="'confirm_window' must be an integer >= 0"):
        AMQPTransport(amqp_broker.URL, confirm_window=value)


def test_what_a_task_sent_is_confirmed_before_its_result_is_stored(
    queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Inside a worker the window is flushed when the body returns, before the result is
    stored (and again after the follow-ups, before the ack): a task that fans 300 sends out
    through the pipeline has them all on the broker by the time its caller reads its result;
    and when its sends cannot be published (their exchange was deleted), the worker says so
    for that task, before its result, instead of leaving it to some later send."""
    from celeriac.testing import worker_thread

    exchange = Exchange(f"{queue}-x", "direct")
    out = Queue(f"{queue}-out", exchange=exchange, routing_key="out")
    worker_app = Celeriac(
        "pipe", broker=amqp_broker.URL, backend="rpc://", task_default_queue=queue,
        task_queues=[Queue(queue), out], task_publish_retry=False, set_as_current=False,
    )  # fmt: skip

    @worker_app.task(name="pipe.fan")
    def fan(n: int) -> int:
        for i in range(n):
            worker_app.send_task("pipe.t", (i,), queue=out.name)
        return n

    caller = Celeriac(
        "pipe", broker=amqp_broker.URL, backend="rpc://", task_default_queue=queue,
        set_as_current=False,
    )  # fmt: skip
    caplog.set_level(logging.ERROR, logger="celeriac")
    try:
        with worker_thread(worker_app, pool="threads", queues=[queue]):
            assert caller.send_task("pipe.fan", (300,)).get(timeout=30) == 300
            assert on_broker(out.name) == 300  # no flush here: the worker's was before the result
            assert on_broker(out.name, drain=True) == list(range(300))
            amqp_broker.delete((), {exchange.name})
            # one send: a second one in the body could meet the first one's failure already
            # (the next send raises it, as documented) and fail the task before its flush
            failing = caller.send_task("pipe.fan", (1,))
            assert failing.get(timeout=30) == 1
            said = [r.getMessage() for r in caplog.records if failing.id in r.getMessage()]
            assert any("not all on the broker yet" in line for line in said), said
    finally:
        caller.close()
        worker_app.close()
        amqp_broker.delete({out.name, f"{out.name}.dlq"}, {exchange.name})
