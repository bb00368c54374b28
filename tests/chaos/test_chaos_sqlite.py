"""Chaos on SQLite: workers killed (prefork child, prefork parent, threads worker) and frozen
past their lease, the broker's disk filled then given back, under a steady load; every task
counted (see :mod:`chaos_run` and :mod:`chaos_ledger`)."""

from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (sys.path for the chaos modules)
import pytest
from chaos_brokers import sqlite_broker
from chaos_run import ChaosRun, schedule

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_sqlite_chaos(tmp_path: Path) -> None:
    with sqlite_broker(tmp_path) as broker:
        faults = schedule(["kill-child", "kill-parent", "freeze"], ["kill-threads"])
        if broker.fill_disk is not None:
            faults.insert(2, "disk-full")
        else:
            print("\nchaos sqlite: no tmpfs of its own (mount needs root): no disk-full fault")
        ChaosRun(broker, tmp_path, faults).run()
