"""Chaos on Redis: workers killed and frozen past their lease, their connections cut, delayed,
left half-open and blackholed through the fault proxy, the broker restarted (a private
``redis-server`` with an append-only file), under a steady load; every task counted."""

from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (sys.path for the chaos modules)
import pytest
from chaos_brokers import redis_broker
from chaos_run import ChaosRun, schedule

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_redis_chaos(tmp_path: Path) -> None:
    with redis_broker(tmp_path) as broker:
        faults = schedule(
            ["kill-child", "cut", "kill-parent", "freeze", "restart"],
            ["delay", "half-open", "blackhole", "kill-threads"],  # half-open: test_watchdog
        )
        ChaosRun(broker, tmp_path, faults).run()
