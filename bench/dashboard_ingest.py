"""What the dashboard's ingest can take: a generated stream of task and worker events folded into
the state, the metrics and the SQLite history, with the process's CPU and RSS measured.

``python bench/dashboard_ingest.py [TASKS]`` (celeriac's venv with the dashboard bundle; default
250,000 tasks, 4 events each: received, started, succeeded or failed (1 in 10), plus a
heartbeat from one of 8 workers every 500 events). The events are built as the receiver yields
them (``local_received``, ``clock``, Celery's fields); generating them is timed apart and left
out. Reported: events per second of wall time, events per CPU second of the whole process
(folding thread and SQLite writer together: what one core does), and RSS every 10% of the run,
so flat memory shows as a flat row. The history file is written to a temporary directory and
its size reported; retention is 100,000 tasks (pruned every 5 s here, every minute by default),
so the file stops growing too.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celeriac.dashboard.ingest import Ingest
from celeriac.dashboard.metrics import Metrics
from celeriac.dashboard.store import HistoryStore

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "dashboard_ingest.json"
WORKERS = [f"celery@bench-{i}" for i in range(8)]
NAMES = [f"shop.task_{i}" for i in range(20)]


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def events_for(n_tasks: int) -> Iterator[dict[str, Any]]:
    """Four events per task, interleaved a little (tasks overlap as they do on a busy fleet)."""
    clock = 0
    now = time.time()
    for i in range(n_tasks):
        task_id = str(uuid.uuid4())
        worker = WORKERS[i % len(WORKERS)]
        name = NAMES[i % len(NAMES)]
        failed = i % 10 == 0
        base = {"hostname": worker, "utcoffset": 0, "pid": 1000 + i % 8}
        steps: list[dict[str, Any]] = [
            {
                "type": "task-received", "uuid": task_id, "name": name,
                "args": f"({i}, 'order-{i}')", "kwargs": "{'priority': 'high'}",
                "root_id": task_id, "parent_id": None, "retries": 0, "eta": None,
                "expires": None,
            },
            {"type": "task-started", "uuid": task_id},
            (
                {
                    "type": "task-failed", "uuid": task_id,
                    "exception": "ValueError('out of stock')",
                    "traceback": "Traceback (most recent call last):\n  ...\nValueError",
                }
                if failed
                else {"type": "task-succeeded", "uuid": task_id, "result": "42", "runtime": 0.012}
            ),
        ]  # fmt: skip
        for step in steps:
            clock += 1
            yield {**base, **step, "clock": clock, "timestamp": now, "local_received": now}
            now += 0.0001
        if i % 125 == 0:
            clock += 1
            yield {
                **base, "type": "worker-heartbeat", "freq": 2.0, "active": 2,
                "processed": i, "loadavg": [0.5, 0.4, 0.3], "clock": clock,
                "timestamp": now, "local_received": time.time(),
            }  # fmt: skip


def main() -> int:
    n_tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 250_000
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "history.db"
        store = HistoryStore(db, max_tasks=100_000, prune_every=5.0).open()
        ingest = Ingest(store, Metrics(), queue_of=lambda name: "celery")
        t0 = time.perf_counter()
        generated = list(events_for(min(n_tasks, 10_000)))
        gen_cost = (time.perf_counter() - t0) / len(generated)
        samples: list[tuple[int, float]] = [(0, rss_mib())]
        step = max(1, n_tasks // 10)
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        count = 0
        for i, event in enumerate(events_for(n_tasks)):
            ingest.fold(event)
            if ingest.due():
                ingest.flush()
            count += 1
            if i and i % (step * 4) == 0:
                samples.append((i // 4, rss_mib()))
        ingest.drain()
        wall = time.perf_counter() - wall0 - gen_cost * count
        cpu = time.process_time() - cpu0 - gen_cost * count
        samples.append((n_tasks, rss_mib()))
        rows = store.query("SELECT count(*) FROM tasks")[0][0]
        ingest.close()
        store.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
    result = {
        "tasks": n_tasks,
        "events": count,
        "events_per_s_wall": round(count / wall),
        "events_per_cpu_s": round(count / cpu),
        "rss_mib": [(t, round(r, 1)) for t, r in samples],
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "history_rows": rows,
        "history_file_mib": round(size, 1),
        "generation_us_per_event_excluded": round(gen_cost * 1e6, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
