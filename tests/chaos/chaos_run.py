"""One chaos run: a broker, two workers, a steady load, a fault schedule, and the accounts.

The same code is the short version (the normal suite: one round) and the long one
(``make chaos``): ``CELERIAC_CHAOS_ROUNDS`` says how many times the schedule is played,
``CELERIAC_CHAOS_RATE`` how many tasks a second the producer sends (default 40),
``CELERIAC_CHAOS_FAULTS`` (``half-open,freeze``...) plays only the faults it names.

A run: the two workers start (a prefork ``-c 2`` and a threads ``-c 2``, each also on a queue of
its own), the producer starts; then, per round, each fault of the schedule in turn, each one
only once the workers have made progress since the last (``STEP`` more tasks done: a fault
that left a worker hung, with the other unable to carry the load, fails the run here, naming
the fault). Then the producer stops, every task sent must be done (the lease of a killed
worker's messages runs out first), one task through each worker's own queue proves that each
fetches still, and :func:`chaos_ledger.settle_accounts` sorts every task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos_app import (
    BROKER_ENV,
    LATE,
    OPTIONS_ENV,
    QUEUE_ENV,
    RECORD_ENV,
    STALL_ENV,
    build_app,
)
from chaos_fleet import CHAOS_DIR, Fleet, Slot
from chaos_ledger import Accounts, settle_accounts
from fault_proxy import FaultProxy
from worker_harness import child_env

ROUNDS = int(os.environ.get("CELERIAC_CHAOS_ROUNDS", "1"))
#: The long version plays every fault of a broker; the short one those that cost the least.
LONG = ROUNDS > 1
RATE = float(os.environ.get("CELERIAC_CHAOS_RATE", "40"))
#: Tasks done between two faults: the workers are moving again.
STEP = 12
#: Tasks a run sends at least, however short its schedule.
MIN_SENT = 200
PROGRESS_TIMEOUT = 45.0
DRAIN_TIMEOUT = 60.0
#: How long the timed faults last (a freeze: past the lease).
DELAY_MS = 150.0
FAULT_SECONDS = 1.5


@dataclass
class Broker:
    """A broker as a run sees it; the hooks are the faults only this broker can have."""

    name: str
    worker_url: str
    producer_url: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Seconds of a lease (SQLite, Redis); None: the broker has none (RabbitMQ).
    lease: float | None = None
    proxy: FaultProxy | None = None
    restart: Callable[[], None] | None = None
    fill_disk: Callable[[], None] | None = None
    free_disk: Callable[[], None] | None = None


#: Only these faults (comma-separated), of those the broker has: to reproduce one finding.
ONLY = [f for f in os.environ.get("CELERIAC_CHAOS_FAULTS", "").split(",") if f]


def schedule(short: list[str], long_only: list[str]) -> list[str]:
    """A broker's faults: ``short`` always, ``long_only`` too under ``make chaos``; with
    ``CELERIAC_CHAOS_FAULTS``, those of the broker's faults it names, in its order."""
    if ONLY:
        return [f for f in ONLY if f in (*short, *long_only)]
    return [*short, *long_only] if LONG else list(short)


class ChaosRun:
    def __init__(
        self, broker: Broker, directory: Path, faults: list[str], stall: float = 3.0
    ) -> None:
        self.broker = broker
        self.dir = directory
        self.faults = faults
        self.queue = f"chaos-{uuid.uuid4().hex[:8]}"
        self.record = directory / "record"
        self.sent = directory / "sent"
        self.stop_file = directory / "stop"
        self.env = child_env(
            {
                BROKER_ENV: broker.worker_url,
                OPTIONS_ENV: json.dumps(broker.options),
                QUEUE_ENV: self.queue,
                RECORD_ENV: str(self.record),
                STALL_ENV: str(stall),
            }
        )
        self.fleet = Fleet(
            directory,
            self.env,
            self.queue,
            [Slot("prefork", "prefork", 2), Slot("threads", "threads", 2)],
        )
        self.producer: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self._done_mark = 0

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> Accounts:
        started = time.monotonic()
        try:
            self.fleet.start_all()
            self._start_producer()
            for round_no in range(ROUNDS):
                for fault in self.faults:
                    waited = self._progress(f"before {fault} (round {round_no + 1})")
                    if self.log:
                        self.log[-1] += f", then {waited:.1f}s to {STEP} more done"
                    began = time.monotonic()
                    self._apply(fault)
                    self.log.append(f"{fault} {time.monotonic() - began:.1f}s")
            waited = self._progress("after the last fault")
            self.log[-1] += f", then {waited:.1f}s to {STEP} more done"
            # a short schedule still gets a few seconds of load behind it
            self._wait(lambda: self._sent() >= MIN_SENT, PROGRESS_TIMEOUT, "the load sent")
            self._stop_producer()
            self._drain()
            for slot in self.fleet.slots:
                self.fleet.ready(slot)
            self._probe_each_worker()
            accounts, runs = settle_accounts(self.dir)
            elapsed = time.monotonic() - started
            print(
                f"\nchaos {self.broker.name}: {ROUNDS} round(s) in {elapsed:.1f}s: "
                f"{accounts.summary()}; watchdog warnings {self.fleet.stall_warnings()}; "
                f"workers that exited while starting {len(self.fleet.startup_failures)}"
                f" {self.fleet.startup_failures}; "
                f"schedule: {'; '.join(self.log)}",
                file=sys.stderr,
            )
            assert accounts.ok, f"{accounts.summary()}\n{accounts.details(runs)}\n{self.outputs()}"
            for slot in self.fleet.slots:
                assert slot.current is not None and slot.current.running, self.outputs()
            return accounts
        finally:
            self.stop_file.touch()
            self._stop_producer()
            self.fleet.close()

    def outputs(self) -> str:
        return f"faults applied: {self.log}\n{self.fleet.outputs()}"

    # -- load ---------------------------------------------------------------------------------
    def _start_producer(self) -> None:
        env = {**self.env, BROKER_ENV: self.broker.producer_url}
        env["PYTHONPATH"] = f"{CHAOS_DIR}{os.pathsep}{env['PYTHONPATH']}"
        self.producer = subprocess.Popen(
            [*self._producer_command(), str(RATE)],
            env=env,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "producer.log").open("ab"),
        )

    def _producer_command(self) -> list[str]:
        return [sys.executable, str(CHAOS_DIR / "producer.py"), str(self.sent), str(self.stop_file)]

    def _stop_producer(self) -> None:
        producer = self.producer
        if producer is None:
            return
        self.stop_file.touch()
        try:
            producer.wait(30)
        except subprocess.TimeoutExpired:
            producer.send_signal(signal.SIGKILL)
            producer.wait(5)
        self.producer = None

    def _sent(self) -> int:
        if not self.sent.exists():
            return 0
        return self.sent.read_bytes().count(b"sent ")

    def _done(self) -> int:
        if not self.record.exists():
            return 0
        return self.record.read_bytes().count(b"done ")

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s: {what}\n{self.outputs()}")
            if self.producer is not None and self.producer.poll() is not None:
                raise AssertionError(f"the producer ended: {self.producer.returncode}")
            time.sleep(0.05)

    def _progress(self, where: str) -> float:
        """Wait for :data:`STEP` more tasks done than at the last call (nobody hangs); returns
        how long that took."""
        began = time.monotonic()
        target = self._done_mark + STEP
        self._wait(lambda: self._done() >= target, PROGRESS_TIMEOUT, f"no progress {where}")
        self._done_mark = self._done()
        return time.monotonic() - began

    def _drain(self) -> None:
        timeout = DRAIN_TIMEOUT + (self.broker.lease or 0.0)

        def drained() -> bool:
            accounts, _ = settle_accounts(self.dir)
            return not accounts.lost

        try:
            self._wait(drained, timeout, "every task sent done")
        except AssertionError as exc:
            accounts, runs = settle_accounts(self.dir)  # as they are now, not at the start
            raise AssertionError(f"{exc}\n{accounts.summary()}\n{accounts.details(runs)}") from None

    def _probe_each_worker(self) -> None:
        """One task through each worker's own queue: each one still fetches."""
        app = build_app(self.broker.producer_url, self.broker.options, self.queue)
        try:
            first = 1_000_000
            for n, slot in enumerate(self.fleet.slots):
                seq = first + n
                app.send_task(LATE, (seq, 1.0), queue=self.fleet.private_queue(slot))
                with self.sent.open("a") as fh:
                    fh.write(f"sent {seq} late {time.time():.3f}\n")
            self._drain()
        finally:
            app.close()

    # -- faults -------------------------------------------------------------------------------
    def _hold(self, seconds: float) -> None:
        """A fault's duration (the fault is the waiting: nothing to wait *for*)."""
        time.sleep(seconds)

    def _apply(self, fault: str) -> None:
        began = time.time()
        try:
            self._inflict(fault)
        finally:
            with (self.dir / "faults").open("a") as fh:
                fh.write(f"fault {fault} {began:.3f} {time.time():.3f}\n")

    def _inflict(self, fault: str) -> None:
        prefork, threads = self.fleet.slots[0], self.fleet.slots[-1]
        proxy = self.broker.proxy
        if fault == "kill-child":
            self.fleet.kill_child(prefork)
        elif fault == "kill-parent":
            self.fleet.kill_parent(prefork)
        elif fault == "kill-threads":
            self.fleet.kill_parent(threads)
        elif fault == "freeze":
            lease = self.broker.lease or FAULT_SECONDS
            self.fleet.freeze(threads, lease + 0.5, self._hold)
        elif fault == "cut":
            assert proxy is not None
            proxy.cut()
        elif fault == "delay":
            assert proxy is not None
            proxy.delay(DELAY_MS)
            self._hold(FAULT_SECONDS)
            proxy.delay(0)
        elif fault == "half-open":
            assert proxy is not None
            proxy.half_open()
        elif fault == "blackhole":
            assert proxy is not None
            proxy.blackhole()
            self._hold(FAULT_SECONDS)
            proxy.heal()
        elif fault == "restart":
            assert self.broker.restart is not None
            self.broker.restart()
        elif fault == "disk-full":
            assert self.broker.fill_disk is not None and self.broker.free_disk is not None
            self.broker.fill_disk()
            try:
                self._hold(FAULT_SECONDS)
            finally:
                self.broker.free_disk()
        else:
            raise ValueError(f"unknown fault {fault!r}")
