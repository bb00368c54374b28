"""A worker whose link to RabbitMQ goes half-open while it starts waits for the broker, as it
does when the broker cannot be reached at all, instead of exiting with a traceback.

Found by the chaos suite: a worker started again after ``kill -9`` (as a supervisor does) met
the next network fault while declaring its queues; the client cancels its pending calls when
the dead connection is noticed (heartbeats every 2 s here), and that ``CancelledError`` ended
the worker. Whichever step the fault lands in (the connect, the declarations, or after), the
worker must end up consuming. The components that open links of their own later in the start
(events, remote control) retry the same way: a link cut as they connected ended the worker with
``Error: cannot connect to RabbitMQ (TimeoutError)``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (sys.path for the chaos modules)
import pytest
from chaos_app import BROKER_ENV, OPTIONS_ENV, QUEUE_ENV, RECORD_ENV
from chaos_brokers import amqp
from chaos_fleet import Fleet, Slot
from fault_proxy import FaultProxy
from worker_harness import child_env, wait_until

import amqp_broker

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@contextlib.contextmanager
def starting_worker(tmp_path: Path, name: str) -> Iterator[tuple[FaultProxy, Fleet, Any]]:
    """A threads worker starting (not waited for) on RabbitMQ through the fault proxy: the
    proxy, the fleet and the worker; everything stopped and deleted when the block ends."""
    queue = f"chaos-{name}-{time.monotonic_ns()}"
    with amqp(tmp_path) as broker:
        assert broker.proxy is not None
        env = child_env(
            {
                BROKER_ENV: broker.worker_url,
                OPTIONS_ENV: json.dumps(broker.options),
                QUEUE_ENV: queue,
                RECORD_ENV: str(tmp_path / "record"),
            }
        )
        slot = Slot("threads", "threads", 2)
        fleet = Fleet(tmp_path, env, queue, [slot])
        try:
            yield broker.proxy, fleet, fleet.start(slot, wait=False)
        finally:
            fleet.close()
            amqp_broker.delete(queues=[queue, f"{queue}-threads", f"{queue}.dlq"])


def test_worker_starts_through_a_link_going_half_open(tmp_path: Path) -> None:
    with starting_worker(tmp_path, "start") as (proxy, fleet, worker):
        wait_until(lambda: proxy.stats().accepted >= 1, 30, "the worker's first connection")
        proxy.half_open()  # the connection it is starting on answers nothing from now
        worker.wait_ready(60)
        assert worker.running and not fleet.startup_failures, worker.output()


def test_worker_starts_through_a_blackhole_after_its_first_link(tmp_path: Path) -> None:
    """The worker's own connection is up and its queues declared; every link opened after it
    (the revokes, events and control components each open one) meets a blackhole: connects
    hang. They must retry, as the first link does, and the worker start once it heals."""
    with starting_worker(tmp_path, "start-bh") as (proxy, fleet, worker):
        wait_until(lambda: proxy.stats().accepted >= 2, 30, "a link after the first")
        proxy.blackhole()
        worker.wait_for_line(r"cannot .* the broker|cannot (reach|listen|open)", 30)
        proxy.heal()
        worker.wait_ready(60)
        assert worker.running and not fleet.startup_failures, worker.output()
