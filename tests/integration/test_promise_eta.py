"""A message whose eta is still ahead is sent back to wait, never run early, on every broker.

The promise (docs/guide/brokers.md, docs/guide/calling.md): countdown and eta wait on the broker,
and a message that reaches a worker before its eta (a producer that did not delay it on the
broker, as Celery's clients do not; a RabbitMQ delay queue whose TTL grid rounds down; a delay
longer than RabbitMQ's largest TTL, 49.7 days, chained) goes back for the rest and runs once, at
or after its eta.

The messages here are published straight to the worker's queue (or through a short RabbitMQ delay
queue) with an eta ahead, so they arrive early by construction; the worker runs in this process
(``celeriac.testing.worker_thread``) on the real broker.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from apps.promise_brokers import Namespace
from worker_harness import on_transport

from celeriac import Celeriac, states
from celeriac.protocol.message import Message, format_time, task_message
from celeriac.testing import worker_thread
from celeriac.transports.amqp.delay import LONGEST_MS, delay_name, ttl_bucket
from celeriac.transports.base import Delivery, Outgoing, Transport

T = TypeVar("T")
WAIT = 15.0
NEAR = 1.0  # seconds ahead: the test waits for this one to run
SOON = 0.4  # seconds ahead: closer than the consumer's tolerance
FAR = timedelta(days=1)  # the test never sees this one run
BEYOND_TTL = timedelta(days=60)  # past RabbitMQ's largest TTL: chained


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def namespace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Namespace]:
    made = Namespace(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def amqp(tmp_path: Path) -> Iterator[Namespace]:
    made = Namespace("amqp", tmp_path)
    try:
        yield made
    finally:
        made.close()


class Stamps:
    """When each run of ``pr.stamp`` happened (wall clock, as an eta is), by label."""

    def __init__(self, app: Celeriac) -> None:
        self.runs: list[tuple[str, float]] = []
        self.lock = threading.Lock()

        @app.task(name="pr.stamp")
        def stamp(label: str) -> float:
            now = time.time()
            with self.lock:
                self.runs.append((label, now))
            return now

    def labels(self) -> list[str]:
        with self.lock:
            return [label for label, _ in self.runs]


def early(label: str, eta: datetime) -> Message:
    """A ``pr.stamp`` message that carries ``eta`` but is sent for delivery now."""
    return task_message(
        task="pr.stamp",
        task_id=f"{label}-{uuid.uuid4()}",
        body=json.dumps([[label], {}, {}]).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        eta=eta,
    )


async def publish(transport: Transport, queue: str, *messages: Message, due: float | None) -> None:
    await transport.publish_batch([Outgoing(m, "", queue, due) for m in messages])


async def take(transport: Transport, queue: str, task_id: str, timeout: float) -> Delivery:
    """Take the message ``task_id`` from ``queue`` (a RabbitMQ delay queue shared with other
    tests of this vhost: what is not ours goes back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await transport.get([queue], 100, timeout=0.2)
        mine = [d for d in got if d.decode().id == task_id]
        others = [d for d in got if d.decode().id != task_id]
        if others:
            await transport.requeue(others)
        if mine:
            return mine[0]
    raise AssertionError(f"{task_id} never reached {queue}")


def test_a_message_that_arrives_before_its_eta_is_sent_back_and_runs_after_it(
    namespace: Namespace,
) -> None:
    app = namespace.app()
    stamps = Stamps(app)
    with worker_thread(app, concurrency=2):
        now = datetime.now(UTC)  # the worker is up: both arrive at once, well before their eta
        near_eta, far_eta = now + timedelta(seconds=NEAR), now + FAR
        near, far = early("near", near_eta), early("far", far_eta)

        async def send(transport: Transport) -> None:
            await publish(transport, namespace.queue, far, near, due=None)

        on_transport(app, send)
        assert app.send_task("pr.stamp", ("marker",)).get(timeout=WAIT) > 0
        assert "near" not in stamps.labels()  # both were fetched at once, before the marker
        ran_at = app.AsyncResult(near.id).get(timeout=WAIT)
        assert ran_at >= near_eta.timestamp()  # never early
        assert app.AsyncResult(far.id).state == states.PENDING
    assert sorted(stamps.labels()) == ["marker", "near"]  # once each; the far one never

    async def far_waits(transport: Transport) -> bool:
        if namespace.kind != "amqp":
            return await transport.size(namespace.queue) == 1  # delayed, on the broker
        remaining = (far_eta - datetime.now(UTC)).total_seconds()
        delayed = await take(transport, delay_name("", ttl_bucket(remaining)[0]), far.id, WAIT)
        assert delayed.decode().headers["eta"] == format_time(far_eta)
        await transport.ack([delayed])  # taken out: it would come back in a day
        return await transport.size(namespace.queue) == 0

    assert on_transport(app, far_waits)
    assert stamps.labels().count("far") == 0


def test_a_message_due_in_less_than_half_a_second_is_not_run_before_its_eta(
    tmp_path: Path,
) -> None:
    namespace = Namespace("sqlite", tmp_path)
    try:
        app = namespace.app()
        Stamps(app)
        with worker_thread(app, concurrency=2):
            eta = datetime.now(UTC) + timedelta(seconds=SOON)
            soon = early("soon", eta)

            async def send(transport: Transport) -> None:
                await publish(transport, namespace.queue, soon, due=None)

            on_transport(app, send)
            assert app.AsyncResult(soon.id).get(timeout=WAIT) >= eta.timestamp()
    finally:
        namespace.close()


@pytest.mark.amqp
def test_a_delay_beyond_rabbitmqs_largest_ttl_is_chained_through_early_arrivals(
    amqp: Namespace,
) -> None:
    """A message due in 60 days arrives early from a short delay queue: the worker sends it to
    the longest delay queue (49.7 days) with its eta kept, and when it comes out of that one
    (published again here as RabbitMQ would dead-letter it, still 10 days early) it is sent back
    once more, its eta still the same: it is never run and never rewritten."""
    app = amqp.app()
    stamps = Stamps(app)
    eta = datetime.now(UTC) + BEYOND_TTL
    message = early("beyond", eta)
    longest = delay_name("", LONGEST_MS)
    assert ttl_bucket(BEYOND_TTL.total_seconds()) == (LONGEST_MS, False)
    with worker_thread(app, concurrency=2):

        async def hops(transport: Transport) -> list[str | None]:
            seen: list[str | None] = []
            # first arrival: through a 200 ms delay queue, far before its eta
            await publish(transport, amqp.queue, message, due=time.time() + 0.2)
            for _ in range(2):
                delivery = await take(transport, longest, message.id, WAIT)
                seen.append(delivery.decode().headers.get("eta"))
                await transport.ack([delivery])
                # as if its 49.7 days were up: back in its queue, still ahead of its eta
                await publish(transport, amqp.queue, delivery.decode(), due=None)
            final = await take(transport, longest, message.id, WAIT)
            seen.append(final.decode().headers.get("eta"))
            await transport.ack([final])
            return seen

        seen = on_transport(app, hops)
        assert app.AsyncResult(message.id).state == states.PENDING
    assert seen == [format_time(eta)] * 3
    assert stamps.labels() == []

    async def letters(transport: Transport) -> int:
        return len(await transport.dead_letters(amqp.queue))

    assert on_transport(app, letters) == 0
