"""Real workers on the real RabbitMQ: kill -9, a poison message, a broker restart, a countdown.

Workers run ``-A apps.amqp_tasks`` (threads pool, two slots) in the ``celeriac-test`` vhost on a
default queue of the test's own; runs are counted from a file. Each test stops every worker it
started, deletes its queues, and the restart test starts RabbitMQ again whatever happens.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps.amqp_tasks import MAX_DELIVERIES_ENV, QUEUE_ENV, RUNS_ENV, URL_ENV, build_app
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_for_runs

import amqp_broker
from celeriac import Celeriac
from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.base import DeadLetter
from conftest import require_service

pytestmark = pytest.mark.amqp


class Setup:
    def __init__(self, tmp_path: Path, max_deliveries: int = 10) -> None:
        self.queue = f"itest-{uuid.uuid4().hex[:8]}"
        self.max_deliveries = max_deliveries
        self.runs = tmp_path / "runs.txt"
        self.dir = tmp_path
        self.workers: list[WorkerProcess] = []
        self.app: Celeriac = build_app(amqp_broker.URL, self.queue, str(self.runs), max_deliveries)

    def env(self) -> dict[str, str]:
        return child_env(
            {
                URL_ENV: amqp_broker.URL,
                QUEUE_ENV: self.queue,
                MAX_DELIVERIES_ENV: str(self.max_deliveries),
                RUNS_ENV: str(self.runs),
            }
        )

    def start_worker(self) -> WorkerProcess:
        worker = start_cli_worker("apps.amqp_tasks", self.env(), self.dir)
        self.workers.append(worker)
        return worker

    def runs_seen(self) -> list[str]:
        if not self.runs.exists():
            return []
        return [line.split()[0] for line in self.runs.read_text().splitlines() if line]

    def run_times(self) -> dict[str, float]:
        lines = self.runs.read_text().splitlines() if self.runs.exists() else []
        return {tag: float(when) for tag, when in (line.split() for line in lines if line)}

    def wait_for_runs(
        self, condition: str, check: Callable[[list[str]], bool], timeout: float
    ) -> None:
        wait_for_runs(condition, self.runs_seen, check, timeout, self.workers)

    def dead_letters(self) -> list[DeadLetter]:
        transport = AMQPTransport(amqp_broker.URL)

        async def read() -> list[DeadLetter]:
            try:
                return await transport.dead_letters(self.queue)
            finally:
                await transport.close()

        letters: list[DeadLetter] = amqp_broker.in_thread(read)
        return letters

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.app.close()
        amqp_broker.delete([self.queue, f"{self.queue}.dlq"])


@pytest.fixture(scope="module")
def vhost() -> Iterator[None]:
    require_service("RabbitMQ", 5672)
    amqp_broker.ensure_vhost()
    yield
    # the workers' delay queues (countdowns, re-delays) have names no test chose: find them
    delays = [name for name in amqp_broker.queue_table() if name.startswith("celeriac.delay.")]
    amqp_broker.delete(delays, [*delays, "celeriac.control", "celeriac.dlx"])


@pytest.fixture
def setup(tmp_path: Path, vhost: None) -> Iterator[Setup]:
    made = Setup(tmp_path)
    yield made
    made.close()


def test_kill_9_during_1000_acks_late_tasks_a_second_worker_finishes_all(setup: Setup) -> None:
    first = setup.start_worker()
    setup.app.send_many([("a.record", (str(i), 0.002), {}) for i in range(1000)])
    setup.wait_for_runs("some tasks to run", lambda runs: len(runs) >= 100, 30)
    os.kill(first.pid, signal.SIGKILL)
    first.wait_exit(10)
    done_by_first = len(setup.runs_seen())
    assert done_by_first < 1000, "the first worker finished everything before it was killed"
    setup.start_worker()
    setup.wait_for_runs("every task to run", lambda runs: len(set(runs)) == 1000, 60)
    runs = setup.runs_seen()
    # acks_late: what the killed worker held (its prefetch window, 2 x 4) ran again, no more
    assert len(runs) - 1000 <= 8, f"{len(runs) - 1000} tasks ran twice"


def test_a_countdown_waits_on_the_broker_then_runs_once(setup: Setup) -> None:
    worker = setup.start_worker()
    sent = time.time()
    setup.app.send_task("a.record", ("late",), countdown=1.5)
    setup.wait_for_runs("the countdown task", lambda runs: runs == ["late"], 20)
    assert setup.run_times()["late"] - sent >= 1.5
    time.sleep(0.3)
    assert setup.runs_seen() == ["late"]
    assert "Traceback" not in worker.stderr()


def test_a_message_that_kills_its_worker_lands_in_the_dlq_and_the_next_worker_lives(
    tmp_path: Path, vhost: None
) -> None:
    setup = Setup(tmp_path, max_deliveries=1)
    try:
        first = setup.start_worker()
        setup.app.send_task("a.kill_worker", ("poison",))
        assert first.wait_exit(20) == -signal.SIGKILL
        second = setup.start_worker()
        second.wait_for_line(r"dead-lettering a message", timeout=20)
        setup.app.send_task("a.record", ("after",))
        setup.wait_for_runs("a task after the poison", lambda runs: "after" in runs, 20)
        assert second.running
        [letter] = setup.dead_letters()
        assert "max_deliveries=1" in letter.reason
        assert setup.runs_seen().count("poison-started") == 1
    finally:
        setup.close()


def test_warm_shutdowns_return_messages_uncounted(tmp_path: Path, vhost: None) -> None:
    """max_deliveries=1: a message returned by a warm shutdown (waiting for a slot, or pushed
    by RabbitMQ and not handed out) and counted as a lost delivery would go to the DLQ."""
    setup = Setup(tmp_path, max_deliveries=1)
    try:
        setup.app.send_many([("a.record", (str(i), 0.02), {}) for i in range(60)])
        for round_no in range(3):  # each worker runs a few, then stops warm
            # counted before the start: a worker runs tasks before it logs that it is ready,
            # sometimes all that are left (a CI run once waited for four more that never came)
            target = min(len(setup.runs_seen()) + 4, 60)
            worker = setup.start_worker()

            def ran_some(runs: list[str], target: int = target) -> bool:
                return len(runs) >= target

            setup.wait_for_runs(f"round {round_no}", ran_some, 30)
            worker.send(signal.SIGTERM)
            assert worker.wait_exit(20) == 0
        setup.start_worker()
        setup.wait_for_runs("every task to run", lambda runs: len(set(runs)) == 60, 60)
        assert setup.dead_letters() == []
        assert len(setup.runs_seen()) == 60  # a warm shutdown finishes what runs: no re-runs
    finally:
        setup.close()


@pytest.mark.serial  # stops the shared RabbitMQ: nothing else may run meanwhile
def test_a_rabbitmq_restart_during_3000_persistent_tasks_loses_none(setup: Setup) -> None:
    count = 3000
    worker = setup.start_worker()
    setup.app.send_many([("a.record", (str(i), 0.001), {}) for i in range(count)])
    setup.wait_for_runs("a quarter of the tasks", lambda runs: len(runs) >= count // 4, 60)
    try:
        amqp_broker.stop_app()
        worker.wait_for_line(r"broker unavailable", timeout=30)
    finally:
        amqp_broker.start_app()
    setup.wait_for_runs("every task to run", lambda runs: len(set(runs)) == count, 60)
    worker.wait_for_line(r"broker is back", timeout=30)
    runs = setup.runs_seen()
    print(f"restart: {len(set(runs))}/{count} ran, {len(runs) - count} ran twice")
    assert worker.running
    # aiormq logs the forced close with its own traceback; none may run through celeriac's code
    assert f"{os.sep}celeriac{os.sep}" not in worker.stderr()


@pytest.mark.serial  # stops the shared RabbitMQ: nothing else may run meanwhile
@pytest.mark.parametrize("window", [0, 256], ids=["each-confirm-awaited", "pipelined"])
def test_a_producer_sending_through_a_rabbitmq_restart_loses_nothing(
    setup: Setup, window: int, caplog: pytest.LogCaptureFixture
) -> None:
    """`.delay()` one by one while RabbitMQ stops and starts: the sends that meet the outage are
    retried by `task_publish_retry_policy` until it is back; every one is confirmed and runs.
    Waiting for each confirm (``confirm_window: 0``), the send that meets the outage waits;
    pipelined, the producer's loop retries and ``flush()`` waits for the last confirm."""
    count = 300
    setup.app.config_from_object(
        {
            "task_publish_retry_policy": {
                "max_retries": 200,
                "interval_start": 0.05,
                "interval_step": 0.05,
                "interval_max": 0.2,
            },
            "broker_transport_options": {
                **setup.app.conf.broker_transport_options,
                "confirm_window": window,
            },
        }
    )
    record = setup.app.tasks["a.record"]
    record.delay("warm-up")  # connected and declared before the outage
    setup.app.producer.flush(timeout=30)
    stopped = threading.Event()

    def restart() -> None:
        try:
            amqp_broker.stop_app()
            stopped.set()
            time.sleep(1.0)
        finally:
            amqp_broker.start_app()

    restarter = threading.Thread(target=restart)
    longest = 0.0
    caplog.set_level(logging.WARNING, logger="celeriac")
    try:
        for i in range(count):
            if i == count // 3:
                restarter.start()
                assert stopped.wait(60), "RabbitMQ did not stop"
            started = time.monotonic()
            record.delay(str(i))
            longest = max(longest, time.monotonic() - started)
        setup.app.producer.flush(timeout=90)  # every confirm is in: none raised
    finally:
        if restarter.ident is not None:
            restarter.join(90)
    retried = [r for r in caplog.records if "publish failed" in r.getMessage()]
    assert retried, "no send met the outage"
    if window == 0:
        assert longest > 0.5  # the send that met the outage waited, retrying, for the restart
    setup.start_worker()
    setup.wait_for_runs("every task to run", lambda runs: len(set(runs) - {"warm-up"}) == count, 60)
