"""The dashboard's ingest through a real broker: events published on Redis by another process,
received by the dashboard's own pump (receiver, state, metrics, history), measured.

``python bench/dashboard_broker.py [EVENTS] [RATE]`` (the local Redis on db 3; default 300,000
events at 15,000/s). A child process publishes task events in ``task.multi`` batches of 24, as
a worker's dispatcher does, at RATE events/s (0: as fast as Redis takes them), from 8 fake worker
hostnames; this process runs a
:class:`~celeriac.dashboard.runtime.Dashboard` (no web server) and counts what its pump folded.
Reported: events per second folded from the first to the last, the CPU seconds this process
spent per event (pump and history writer),
events lost on the way (published but never folded: a listener that falls behind drops the
oldest, as Redis PUB/SUB does for a slow subscriber), and this process's RSS at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from celeriac import Celeriac
from celeriac.dashboard.config import DashboardConfig
from celeriac.dashboard.runtime import Dashboard

URL = "redis://127.0.0.1:6379/3"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "dashboard_broker.json"

PUBLISHER = r"""
import asyncio, sys, time, uuid
from celeriac import Celeriac
from celeriac.events.event import event_exchange, event_message

async def main(total: int, rate: float) -> None:
    app = Celeriac("pub", broker=sys.argv[1], backend=None)
    transport = app.create_transport()
    await transport.connect()
    exchange = event_exchange()
    sent = clock = 0
    began = time.monotonic()
    kinds = ("task-received", "task-started", "task-succeeded")
    while sent < total:
        host = f"celery@bench-{sent % 8}"
        batch = []
        for i in range(8):
            task_id = str(uuid.uuid4())
            for kind in kinds:
                clock += 1
                batch.append({"hostname": host, "utcoffset": 0, "pid": 1, "clock": clock,
                              "timestamp": time.time(), "type": kind, "uuid": task_id,
                              "name": f"bench.t{i}", "args": "(1, 2)", "kwargs": "{}",
                              "result": "3", "runtime": 0.001})
        await transport.publish_transient(exchange, "task.multi", [event_message(host, batch)])
        sent += len(batch)
        ahead = sent / rate - (time.monotonic() - began) if rate else 0.0
        if ahead > 0:
            await asyncio.sleep(ahead)
    await transport.close()
    print(sent)

asyncio.run(main(int(sys.argv[2]), float(sys.argv[3])))
"""


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 15_000
    app = Celeriac("bench-dashboard", broker=URL, backend=None)
    with tempfile.TemporaryDirectory() as tmp:
        dashboard = Dashboard(app, DashboardConfig(db=Path(tmp) / "history.db"))
        dashboard.start()
        deadline = time.monotonic() + 10
        while not dashboard.listening and time.monotonic() < deadline:
            time.sleep(0.05)
        ingest = dashboard.ingest
        start_count = ingest.events
        cpu0 = time.process_time()
        publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, URL, str(total), str(rate)])
        first = last = None
        seen = start_count
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            count = ingest.events
            if count != seen:
                if first is None:
                    first = now
                last, seen, quiet_since = now, count, now
            elif publisher.poll() is not None and now - quiet_since > 3:
                break
            time.sleep(0.01)
        cpu = time.process_time() - cpu0
        folded = seen - start_count
        elapsed = (last or 0) - (first or 0)
        result = {
            "published": total,
            "publish_rate": rate,
            "folded": folded,
            "lost_in_transit": total - folded,
            "events_per_s": round(folded / elapsed) if elapsed else None,
            "cpu_us_per_event": round(cpu / folded * 1e6, 1) if folded else None,
            "rss_mib_end": round(rss_mib(), 1),
            "cpus": os.cpu_count(),
        }
        dashboard.stop()
    publisher.wait(30)
    app.close()
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
