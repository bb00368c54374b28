"""Chaos on RabbitMQ: workers killed and frozen, their connections cut, delayed, left half-open
and blackholed through the fault proxy (in the parallel part), and the broker restarted with
``stop_app``/``start_app`` (serial: it stops the shared server), under a steady load; every
task counted. RabbitMQ has no leases: a killed worker's messages come back when its connection
closes, a half-open one's when heartbeats (every 2 s here) find it dead."""

from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (sys.path for the chaos modules)
import pytest
from chaos_brokers import amqp, delete_amqp_queues
from chaos_run import ChaosRun, schedule

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_amqp_network_chaos(tmp_path: Path) -> None:
    with amqp(tmp_path) as broker:
        faults = schedule(
            ["kill-child", "cut", "kill-parent"], ["blackhole", "delay", "half-open", "freeze"]
        )
        run = ChaosRun(broker, tmp_path, faults)
        try:
            run.run()
        finally:
            delete_amqp_queues(run)


@pytest.mark.serial
def test_amqp_restart_chaos(tmp_path: Path) -> None:
    with amqp(tmp_path) as broker:
        run = ChaosRun(broker, tmp_path, ["restart", "kill-parent"])
        try:
            run.run()
        finally:
            delete_amqp_queues(run)
