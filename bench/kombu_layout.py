"""The Redis broker's two layouts side by side: native (``celeriac``) and kombu's.

``python bench/kombu_layout.py`` (celeriac's venv; about two minutes). Two measurements, each
arm interleaved with the other so that the machine's drift hits both alike:

* **worker drain**: 20,000 ``bench.noop`` tasks (one Redis INCR each) queued under a prefix of
  their own, then a worker (``-P prefork -c 2``, as ``bench/events.py``) started on them; the
  rate from the first task done to the last (start-up left out), and the CPU of the worker's
  process tree per task (``/proc``);
* **transport alone**: 20,000 messages published in batches of 1,000, then taken 100 at a time,
  decoded (as a consumer does) and acked in the same batches, in this process: the broker path
  without a worker.

Results: ``results/kombu_layout.json``; the medians and the kombu/native ratios are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from celeriac import Celeriac
from celeriac.protocol.message import task_message
from celeriac.routing import Queue
from celeriac.transports.base import Outgoing
from celeriac.transports.registry import create_transport

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import procs  # noqa: E402  (bench/ is not a package)
from kombu_layout_app import options  # noqa: E402

URL = "redis://127.0.0.1:6379/2"
N = int(os.environ.get("BENCH_KL_TASKS", "20000"))
REPEATS = int(os.environ.get("BENCH_KL_REPEATS", "3"))
ARMS = ("celeriac", "kombu")
RESULTS = HERE / "results" / "kombu_layout.json"


def _clean(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def worker_drain(layout: str, log: Path) -> dict[str, Any]:
    prefix = f"bench-kl-{uuid.uuid4().hex[:8]}:"
    counter = f"{prefix}counter"
    app = Celeriac("bench_kl", broker=URL, backend="disabled")
    app.conf.broker_transport_options = options(layout, prefix)
    client = redis.Redis.from_url(URL)
    try:
        for start in range(0, N, 5000):
            app.send_many([("bench.noop", (), {})] * min(5000, N - start))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "BENCH_KL_URL": URL,
            "BENCH_KL_PREFIX": prefix,
            "BENCH_KL_COUNTER": counter,
            "BENCH_KL_LAYOUT": layout,
        }
        argv = [sys.executable, "-m", "celeriac", "-A", "kombu_layout_app", "worker"]
        argv += ["-P", "prefork", "-c", "2", "-l", "info", "-n", f"bench-{layout}@%h"]
        with procs.running(argv, env, HERE, log) as proc:
            deadline = time.monotonic() + 120
            while int(client.get(counter) or 0) < 1:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the worker did not start: {procs.log_tail(log)}")
                time.sleep(0.002)
            first_done, t0 = int(client.get(counter) or 0), time.monotonic()
            cpu0 = procs.cpu_seconds(proc.pid)
            while (done := int(client.get(counter) or 0)) < N:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"drain stalled at {done}: {procs.log_tail(log)}")
                time.sleep(0.005)
            t1 = time.monotonic()
            cpu1 = procs.cpu_seconds(proc.pid)
        tasks = N - first_done
        return {
            "arm": layout,
            "rate": tasks / (t1 - t0),
            "cpu_ms_per_task": 1000 * (cpu1 - cpu0) / tasks,
        }
    finally:
        _clean(client, prefix)
        client.close()
        app.close()


async def transport_alone(layout: str) -> dict[str, Any]:
    prefix = f"bench-kl-{uuid.uuid4().hex[:8]}:"
    transport = create_transport(URL, **options(layout, prefix))
    body = b"[[], {}, {}]"
    items = [
        Outgoing(
            task_message(
                task="bench.noop",
                task_id=str(uuid.uuid4()),
                body=body,
                content_type="application/json",
                content_encoding="utf-8",
            ),
            "",
            "celery",
        )
        for _ in range(N)
    ]
    try:
        await transport.declare_queue(Queue("celery"))
        cpu0, t0 = time.process_time(), time.perf_counter()
        for start in range(0, N, 1000):
            await transport.publish_batch(items[start : start + 1000])
        t1, cpu1 = time.perf_counter(), time.process_time()
        taken = 0
        while taken < N:
            batch = await transport.get(["celery"], 100, timeout=1)
            for delivery in batch:  # as a consumer does (the kombu layout decodes in get())
                delivery.decode()
            await transport.ack(batch)
            taken += len(batch)
        t2, cpu2 = time.perf_counter(), time.process_time()
    finally:
        await transport.close()
        client = redis.Redis.from_url(URL)
        _clean(client, prefix)
        client.close()
    return {
        "arm": layout,
        "publish_per_s": N / (t1 - t0),
        "take_ack_per_s": N / (t2 - t1),
        "client_cpu_us_per_message": 1e6 * ((cpu1 - cpu0) + (cpu2 - cpu1)) / N,
    }


def _median(runs: list[dict[str, Any]], arm: str, key: str) -> float:
    return statistics.median(r[key] for r in runs if r["arm"] == arm)


def main() -> dict[str, Any]:
    log = HERE / "results" / "logs" / "kombu-layout-worker.log"
    drains: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    for repeat in range(REPEATS):
        for arm in ARMS if repeat % 2 == 0 else ARMS[::-1]:
            drain = worker_drain(arm, log)
            drains.append(drain)
            bare = asyncio.run(transport_alone(arm))
            alone.append(bare)
            print(
                f"[{repeat + 1}/{REPEATS}] {arm:8s} drain {drain['rate']:7,.0f} tasks/s "
                f"{drain['cpu_ms_per_task']:.3f} ms CPU/task | transport: publish "
                f"{bare['publish_per_s']:8,.0f}/s, take+ack {bare['take_ack_per_s']:7,.0f}/s, "
                f"{bare['client_cpu_us_per_message']:.1f} us CPU/message",
                flush=True,
            )
    median = {
        arm: {
            "drain_rate": _median(drains, arm, "rate"),
            "drain_cpu_ms_per_task": _median(drains, arm, "cpu_ms_per_task"),
            "publish_per_s": _median(alone, arm, "publish_per_s"),
            "take_ack_per_s": _median(alone, arm, "take_ack_per_s"),
            "client_cpu_us_per_message": _median(alone, arm, "client_cpu_us_per_message"),
        }
        for arm in ARMS
    }
    ratio = {key: median["kombu"][key] / median["celeriac"][key] for key in median["celeriac"]}
    for key, value in ratio.items():
        print(f"kombu / native {key}: {value:.2f}")
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tasks": N,
        "repeats": REPEATS,
        "worker": "prefork -c 2, Redis, bench.noop (one INCR)",
        "median": median,
        "ratio_kombu_to_native": ratio,
        "drains": drains,
        "transport_alone": alone,
    }


if __name__ == "__main__":
    result = main()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
