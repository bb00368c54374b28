"""The sync producer's window (:mod:`celeriac.app.pipeline`) with a transport whose confirms
the test releases, on a real portal loop: what is written when, in what order, and what a
failure or a closing loop leaves.

RabbitMQ itself is in ``tests/integration/test_amqp_pipeline.py``; here the broker's part is an
in-memory transport (so the messages really land somewhere) whose ``publish_now`` writes at
once and whose confirms come when the test says, which no real broker lets a test decide.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.app import pipeline
from celeriac.app.pipeline import PublishPipeline
from celeriac.errors import TransportError
from celeriac.protocol.message import task_message
from celeriac.routing import Queue
from celeriac.transports.base import Outgoing
from celeriac.transports.memory import MemoryTransport
from celeriac.utils.portal import Portal

NO_RETRY = (0, 0.0, 0.0, 0.0)
ONE_RETRY = (1, 0.0, 0.0, 0.0)


class HeldConfirms(MemoryTransport):
    """Writes in ``publish_now`` (each batch's first arguments recorded, in order), and
    confirms a batch when the test calls :meth:`confirm` (or fails it with :meth:`fail`);
    ``refuse`` makes ``publish_now`` decline, so the pipeline publishes from a task."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.written: list[list[int]] = []
        self.awaited: list[list[int]] = []  # batches published through publish_batch
        self.pending: list[asyncio.Future[list[int]]] = []
        self.refuse = False
        self.block = False
        self.changed = threading.Condition()

    def publish_now(self, items: Any) -> Any:
        if self.refuse:
            return None
        confirmed: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        with self.changed:
            self.written.append([first(item) for item in items])
            self.pending.append(confirmed)
            self.changed.notify_all()
        return confirmed

    async def publish_batch(self, items: Any) -> list[int]:
        with self.changed:
            self.awaited.append([first(item) for item in items])
            self.changed.notify_all()
        if self.block:  # held until the task is cancelled
            await asyncio.Event().wait()
        return await super().publish_batch(items)

    def until(self, check: Any, timeout: float = 5.0) -> None:
        with self.changed:
            assert self.changed.wait_for(check, timeout), "the pipeline never got there"

    def settle(self, portal: Portal, index: int, error: BaseException | None = None) -> None:
        """Confirm (or fail) the ``index``-th batch written, on the loop."""

        async def settle() -> None:
            future = self.pending[index]
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result([1] * len(self.written[index]))

        portal.call(settle())


def first(item: Outgoing) -> int:
    return int(item.message.headers["argsrepr"].strip("(,)"))


def outgoing(n: int) -> Outgoing:
    message = task_message(
        task="t",
        task_id=f"id-{n}",
        body=b"[[], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        args_repr=f"({n},)",
    )
    return Outgoing(message=message, exchange="", routing_key="q")


@pytest.fixture(autouse=True)
def patient_handover(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first send of an idle window waits for the loop to take it, 5 ms at most: tests
    that look at what was written as soon as ``send`` returns wait as long as it takes (a
    loaded machine can take longer than 5 ms to wake the loop)."""
    monkeypatch.setattr(pipeline, "HANDOVER_WAIT", 30.0)


@pytest.fixture
def portal() -> Iterator[Portal]:
    portal = Portal("test-pipeline")
    yield portal
    portal.close()


def window_of(
    portal: Portal, request: pytest.FixtureRequest, size: int = 16, policy: Any = NO_RETRY
) -> tuple[PublishPipeline, HeldConfirms]:
    transport = HeldConfirms(f"memory://pipeline-{request.node.name}")
    portal.call(transport.declare_queue(Queue("q")))
    return PublishPipeline(portal, transport, size, lambda: policy), transport


def test_a_send_is_written_while_the_one_before_waits_for_its_confirm(
    portal: Portal, request: pytest.FixtureRequest
) -> None:
    window, broker = window_of(portal, request)
    window.send([outgoing(1)])
    broker.until(lambda: len(broker.written) == 1)
    window.send([outgoing(2)])  # the first is not confirmed: the second is written all the same
    broker.until(lambda: len(broker.written) == 2)
    assert broker.written == [[1], [2]]
    assert window.outstanding == 2
    broker.settle(portal, 1)
    broker.settle(portal, 0)
    window.flush(timeout=5)
    assert window.outstanding == 0


def test_the_first_send_of_an_idle_window_returns_once_the_loop_wrote_it(
    portal: Portal, request: pytest.FixtureRequest
) -> None:
    window, broker = window_of(portal, request)
    window.send([outgoing(1)])
    assert broker.written == [[1]]  # no waiting here: the send waited for the write
    broker.settle(portal, 0)
    window.flush(timeout=5)


def test_sends_that_cannot_be_written_at_once_go_from_a_task_in_order(
    portal: Portal, request: pytest.FixtureRequest
) -> None:
    window, broker = window_of(portal, request, size=1000)
    broker.refuse = True
    for n in range(200):
        window.send([outgoing(n)])
    window.flush(timeout=10)
    assert [n for batch in broker.awaited for n in batch] == list(range(200))
    assert broker.written == []
    broker.refuse = False  # the sequence ended: the next send is written from the callback
    window.send([outgoing(200)])
    assert broker.written == [[200]]
    broker.settle(portal, 0)
    window.flush(timeout=5)


def test_a_written_batch_that_fails_is_published_again_by_the_retry_policy(
    portal: Portal, request: pytest.FixtureRequest
) -> None:
    window, broker = window_of(portal, request, policy=ONE_RETRY)
    window.send([outgoing(1)])
    broker.settle(portal, 0, TransportError("channel closed"))
    window.flush(timeout=5)  # the retry published it: nothing to raise
    assert broker.awaited == [[1]]


def test_a_written_batch_that_fails_for_good_is_raised_then_kept_for_the_next_try(
    portal: Portal, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    window, broker = window_of(portal, request)
    window.send([outgoing(1)])
    broker.settle(portal, 0, TransportError("channel closed"))
    broker.refuse = True  # the next attempt awaits publish_batch, which the memory broker takes
    window.flush(timeout=5)  # the failed batch is published again here
    assert broker.awaited == [[1]]
    assert "publishing 1 message(s) failed" in caplog.text


def test_a_sequence_cancelled_by_a_closing_loop_fails_its_batches_instead_of_hanging_a_flush(
    portal: Portal, request: pytest.FixtureRequest
) -> None:
    """Batches that go from a task (``publish_now`` declined them) while the loop's tasks are
    cancelled (as when it closes): the one being published and those queued behind it leave
    the window as failed, so ``flush`` does not wait for them, and publishes them again."""
    window, broker = window_of(portal, request)
    broker.refuse = True
    broker.block = True
    window.send([outgoing(1)])
    broker.until(lambda: broker.awaited == [[1]])
    window.send([outgoing(2)])  # queued behind the sequence's batch

    async def cancel_all() -> None:
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    portal.call(cancel_all())
    broker.block = False
    window.flush(timeout=5)
    assert broker.awaited == [[1], [1, 2]]
    assert window.outstanding == 0


def test_a_written_batch_whose_confirm_fails_otherwise_is_raised_and_kept(
    portal: Portal, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    window, broker = window_of(portal, request, policy=ONE_RETRY)
    window.send([outgoing(1)])
    broker.settle(portal, 0, RuntimeError("a client's bug"))  # no broker error: no retry
    broker.refuse = True
    window.flush(timeout=5)  # raised nothing: the kept batch was published again by flush
    assert broker.awaited == [[1]]
    assert "publishing 1 message(s) failed: RuntimeError" in caplog.text


def test_a_transport_without_publish_now_publishes_every_batch_from_a_task(
    portal: Portal, request: pytest.FixtureRequest
) -> None:
    transport = MemoryTransport(f"memory://pipeline-{request.node.name}")
    portal.call(transport.declare_queue(Queue("q")))
    window = PublishPipeline(portal, transport, 8, lambda: NO_RETRY)
    for n in range(50):
        window.send([outgoing(n)])
    window.flush(timeout=10)
    assert portal.call(transport.size("q")) == 50
