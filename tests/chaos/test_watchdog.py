"""The fetch watchdog (``src/celeriac/worker/watchdog.py``) on a real fault: Redis connections
left half-open under a steady load. The worker's fetch, or the acks its window waits on, wait
on a link that answers nothing while the queue fills; the worker must say so, naming the queue,
and fetch again by itself, with nothing lost."""

from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (sys.path for the chaos modules)
import pytest
from chaos_brokers import redis_broker
from chaos_fleet import STALL_LINE
from chaos_run import ChaosRun

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_half_open_redis_is_reported_and_recovered(tmp_path: Path) -> None:
    with redis_broker(tmp_path) as broker:
        run = ChaosRun(broker, tmp_path, ["half-open"], stall=1.0)
        del run.fleet.slots[0]  # one threads worker: nobody else fetches for it
        run.run()  # every task done once, the worker alive and fetching
        stderr = "\n".join(w.stderr() for w in run.fleet.workers())
        warned = [line for line in stderr.splitlines() if STALL_LINE in line]
        assert warned, run.outputs()
        assert run.queue in warned[0], warned[0]
        assert "fetching again after" in stderr, run.outputs()
