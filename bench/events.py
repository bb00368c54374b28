"""What events, signing and an embedded beat cost a worker: a 20,000-task drain on Redis,
prefork -c 2, with each feature on against ``off``.

``python bench/events.py`` (``make bench-events``; celeriac's venv; about two minutes). Five
arms, interleaved so that the machine's drift hits each alike: ``off`` (no ``-E``: worker events
only), ``on`` (``-E``, nobody listening), ``on+listener`` (``-E`` and a receiver in this process
reading every event), ``signed`` (no ``-E``; the producer signs every message with an Ed25519
key and the worker verifies each before it reads it) and ``beat`` (no ``-E``; the worker runs
an embedded beat, ``-B``, leading a schedule of 100 entries that fire every second). Each
run queues 20,000 ``bench.noop`` tasks (one Redis INCR each) under a key prefix of its own,
starts the worker, and measures from the first task done to the last (start-up left out): the
rate, and the CPU of the worker's whole process tree per task (``/proc``, as ``make bench``
reads it). The listener counts the events it received, which gives the publish rate seen from
outside. Results: ``results/events.json``; the medians are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from celeriac import Celeriac
from celeriac.events import EventReceiver

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import procs  # noqa: E402  (bench/ is not a package)

URL = "redis://127.0.0.1:6379/2"
N = 20_000
REPEATS = int(os.environ.get("BENCH_EVENTS_REPEATS", "3"))
ARMS = tuple(
    os.environ.get("BENCH_EVENTS_ARMS", "off,on,on+listener,signed,beat").split(",")
)  # fmt: skip
BEAT_ENTRIES = 100
RESULTS = HERE / "results" / "events.json"


class Listener:
    """A receiver on its own thread and loop, counting the events of one worker."""

    def __init__(self, app: Celeriac) -> None:
        self.count = 0
        self.batches = 0
        self._receiver = EventReceiver(app.create_transport())
        self._open = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._open.wait(10):
            raise RuntimeError("the event listener did not open")

    async def _run(self) -> None:
        async with self._receiver as receiver:
            self._open.set()
            while not self._stop.is_set():
                event = await receiver.next(0.2)
                if event is not None and event["type"].startswith("task-"):
                    self.count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def main_cpu(pid: int) -> float:
    """CPU seconds of the worker's main process alone (where events are built and sent)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / procs.CLOCK_TICKS


def signing_keys(folder: Path) -> dict[str, str]:
    """A key pair made with celeriac's own CLI, as an operator would: the app settings that
    sign with it and trust it."""
    import subprocess

    cli = Path(sys.executable).with_name("celeriac")
    subprocess.run([str(cli), "keys", "generate", "bench"], cwd=folder, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    return {
        "security_key": str(folder / "bench.key"),
        "security_cert_store": str(folder / "bench.pem"),
    }


def one_run(arm: str, log: Path, keys: dict[str, str]) -> dict[str, Any]:
    prefix = f"bench-events-{uuid.uuid4().hex[:8]}:"
    counter = f"{prefix}counter"
    signing = keys if arm == "signed" else {}
    app = Celeriac("bench_events", broker=URL, backend="disabled", **signing)
    app.conf.broker_transport_options = {"key_prefix": prefix}
    client = redis.Redis.from_url(URL)
    listener = Listener(app) if arm == "on+listener" else None
    try:
        for start in range(0, N, 5000):
            app.send_many([("bench.noop", (), {})] * min(5000, N - start))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "BENCH_EVENTS_URL": URL,
            "BENCH_EVENTS_PREFIX": prefix,
            "BENCH_EVENTS_COUNTER": counter,
            "BENCH_EVENTS_KEY": signing.get("security_key", ""),
            "BENCH_EVENTS_TRUST": signing.get("security_cert_store", ""),
            "BENCH_EVENTS_BEAT": str(BEAT_ENTRIES if arm == "beat" else 0),
        }
        argv = [sys.executable, "-m", "celeriac", "-A", "events_app", "worker"]
        argv += ["-P", "prefork", "-c", "2", "-l", "info", "-n", f"bench-{arm}@%h"]
        argv += ["-E"] if arm in ("on", "on+listener") else []
        argv += ["-B"] if arm == "beat" else []
        with procs.running(argv, env, HERE, log) as proc:
            deadline = time.monotonic() + 120
            while int(client.get(counter) or 0) < 1:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the worker did not start: {procs.log_tail(log)}")
                time.sleep(0.002)
            first_done, t0 = int(client.get(counter) or 0), time.monotonic()
            cpu0, main0 = procs.cpu_seconds(proc.pid), main_cpu(proc.pid)
            while (done := int(client.get(counter) or 0)) < N:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"drain stalled at {done}: {procs.log_tail(log)}")
                time.sleep(0.005)
            t1 = time.monotonic()
            cpu1, main1 = procs.cpu_seconds(proc.pid), main_cpu(proc.pid)
        tasks = N - first_done
        seen = 0
        if listener is not None:
            wait_until = time.monotonic() + 5  # the last batches are on their way
            while listener.count < 3 * N and time.monotonic() < wait_until:
                time.sleep(0.01)
            seen = listener.count
        return {
            "arm": arm,
            "rate": tasks / (t1 - t0),
            "cpu_ms_per_task": 1000 * (cpu1 - cpu0) / tasks,
            "main_cpu_ms_per_task": 1000 * (main1 - main0) / tasks,
            "events_received": seen,
            "events_per_s": seen / (t1 - t0) if seen else 0.0,
        }
    finally:
        if listener is not None:
            listener.close()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        app.close()


async def publish_rate(events: int = 200_000) -> dict[str, float]:
    """The dispatcher alone on Redis: ``events`` task events sent as fast as the loop can,
    batched as a worker batches them; events per second and CPU per event (this process)."""
    from celeriac.events import EventDispatcher

    app = Celeriac("bench_events", broker=URL, backend="disabled")
    app.conf.broker_transport_options = {"key_prefix": f"bench-events-{uuid.uuid4().hex[:8]}:"}
    transport = app.create_transport()
    await transport.connect()
    dispatcher = EventDispatcher(transport, "bench@publish", max_pending=100_000)
    dispatcher.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for n in range(events):
        dispatcher.send("task-succeeded", uuid="0" * 36, result="None", runtime=0.001)
        if n % 1000 == 999:
            await asyncio.sleep(0)  # a worker's loop turns between tasks
    await dispatcher.close(timeout=60)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await transport.close()
    app.close()
    return {
        "events": dispatcher.events_sent,
        "dropped": dispatcher.dropped,
        "messages": dispatcher.messages_sent,
        "publish_calls": dispatcher.publishes,
        "events_per_s": dispatcher.events_sent / wall,
        "cpu_us_per_event": 1e6 * cpu / events,
    }


def main() -> dict[str, Any]:
    import tempfile

    log = HERE / "results" / "logs" / "events-worker.log"
    runs = []
    folder = tempfile.TemporaryDirectory(prefix="bench-keys-")
    keys = signing_keys(Path(folder.name))
    for repeat in range(REPEATS):
        for arm in ARMS:
            result = one_run(arm, log, keys)
            runs.append(result)
            print(
                f"[{repeat + 1}/{REPEATS}] {arm:12s} {result['rate']:8,.0f} tasks/s "
                f"{result['cpu_ms_per_task']:.3f} ms CPU/task "
                f"(main process {result['main_cpu_ms_per_task']:.3f})"
                + (f", {result['events_per_s']:,.0f} events/s" if result["events_per_s"] else ""),
                flush=True,
            )
    summary = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {
            "rate": statistics.median(r["rate"] for r in mine),
            "cpu_ms_per_task": statistics.median(r["cpu_ms_per_task"] for r in mine),
            "main_cpu_ms_per_task": statistics.median(r["main_cpu_ms_per_task"] for r in mine),
            "events_per_s": statistics.median(r["events_per_s"] for r in mine),
        }
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "publish": asyncio.run(publish_rate()),
        "tasks": N,
        "repeats": REPEATS,
        "worker": "prefork -c 2, Redis, bench.noop (one INCR)",
        "beat_entries": BEAT_ENTRIES,
        "median": summary,
        "runs": runs,
    }


if __name__ == "__main__":
    result = main()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    publish = result["publish"]
    print(
        f"dispatcher alone: {publish['events_per_s']:,.0f} events/s published, "
        f"{publish['cpu_us_per_event']:.2f} us CPU per event, {publish['messages']:,} messages "
        f"in {publish['publish_calls']:,} calls, {publish['dropped']} dropped"
    )
    off = result["median"]["off"]
    for arm in ARMS:
        m = result["median"][arm]
        print(
            f"{arm:12s} median {m['rate']:8,.0f} tasks/s ({m['rate'] / off['rate']:.1%} of off), "
            f"{m['cpu_ms_per_task']:.3f} ms CPU/task "
            f"({m['cpu_ms_per_task'] / off['cpu_ms_per_task']:.1%} of off); main process "
            f"{m['main_cpu_ms_per_task']:.3f} ms/task "
            f"({m['main_cpu_ms_per_task'] / off['main_cpu_ms_per_task']:.1%} of off)"
        )
