"""Beat at scale on the local Redis: ``make bench-beat`` (celeriac's venv; about two minutes).

10,000 entries in the store: 5,000 fire every minute (``crontab()``), 5,000 every hour on the
epoch grid (``schedule(3600)``). One beat leads; the script waits for two minute boundaries and
reports, for each due minute, how many firings went out, how long after the slot the batch
publish finished (the lag), and the firings per second of that publish; then the beat's CPU over
an idle window between minutes, read from ``getrusage`` of this process (the beat runs on this
process's event loop and does nothing else). Everything lives under a key prefix of the run's own
on Redis db 12, deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from celeriac import Celeriac
from celeriac.beat.entry import Entry
from celeriac.beat.scheduler import Beat
from celeriac.schedules import crontab, schedule

URL = "redis://127.0.0.1:6379/12"
ENTRIES = 10_000
RESULTS = Path(__file__).resolve().parent / "results" / "beat.json"


class MeasuredBeat(Beat):
    """A beat that notes, per batch, its size and when its publish finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[dict[str, float]] = []

    async def _publish(self, firings: list[tuple[Entry, datetime]]) -> None:
        started = time.time()
        await super()._publish(firings)
        done = time.time()
        oldest = min(slot for _, slot in firings).timestamp()
        self.batches.append(
            {
                "firings": len(firings),
                "lag_s": done - oldest,
                "publish_s": done - started,
                "per_s": len(firings) / max(done - started, 1e-9),
            }
        )


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main() -> dict[str, Any]:
    prefix = f"bench-beat-{uuid.uuid4().hex[:8]}:"
    app = Celeriac(
        "bench_beat",
        broker=URL,
        backend="disabled",
        broker_transport_options={"key_prefix": prefix},
    )
    beat = MeasuredBeat(app, node="bench")
    await beat.store.open()
    entries: dict[str, dict[str, Any]] = {}
    for i in range(ENTRIES):
        sched = crontab() if i % 2 == 0 else schedule(3600)
        entry = Entry(name=f"e{i:05d}", task="bench.noop", schedule=sched, origin="runtime")
        entries[entry.name] = entry.to_dict()
    started = time.perf_counter()
    await beat.store.put_entries(entries)
    stored_s = time.perf_counter() - started

    runner = asyncio.create_task(beat.run())
    took_over = time.perf_counter()
    while not beat.entries:
        await asyncio.sleep(0.05)
    load_s = time.perf_counter() - took_over
    # two minute boundaries
    while len([b for b in beat.batches if b["firings"] >= 1000]) < 2:
        await asyncio.sleep(0.2)
    # idle: from 5 s after the last boundary for 30 s (no slot in between)
    await asyncio.sleep(5)
    before_cpu, before = cpu(), time.monotonic()
    await asyncio.sleep(30)
    idle_cpu = (cpu() - before_cpu) / (time.monotonic() - before) * 100
    beat.stop()
    await runner

    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    app.close()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "entries": ENTRIES,
        "store_put_s": round(stored_s, 3),
        "load_s": round(load_s, 3),
        "batches": [{k: round(v, 4) for k, v in b.items()} for b in beat.batches],
        "idle_cpu_percent": round(idle_cpu, 3),
    }


if __name__ == "__main__":
    result = asyncio.run(main())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    big = [b for b in result["batches"] if b["firings"] >= 1000]
    print(
        f"beat, {result['entries']:,} entries on Redis: load {result['load_s']:.2f} s; "
        + "; ".join(
            f"{b['firings']:,} due: sent {b['lag_s'] * 1000:.0f} ms after the slot "
            f"({b['per_s']:,.0f}/s)"
            for b in big
        )
        + f"; idle CPU {result['idle_cpu_percent']:.2f}%",
        file=sys.stdout,
    )
