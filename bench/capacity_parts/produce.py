"""One producer process of the capacity run: sends ``capacity.noop`` until stopped.

``python -m capacity_parts.produce MODE BATCH METER_URL`` with the app's environment set.
MODE ``delay`` sends one task per call (a web process's ``.delay()``), ``bulk`` sends BATCH
tasks per ``send_many``. After each BATCH tasks it adds them to the run's ``sent`` counter on the
meter Redis and reads the ``pause`` flag there: the driver raises it while the backlog is over
its bound, so the queue stays bounded however far the producers outrun the workers.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import redis

from capacity_parts.app import PREFIX, app, noop

SENT = f"{PREFIX}sent"
PAUSE = f"{PREFIX}pause"


def main(mode: str, batch: int, meter_url: str) -> int:
    meter = redis.Redis.from_url(meter_url)
    running = True

    def stop(*_: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    calls: list[tuple[str, tuple[()], dict[str, Any]]] = [("capacity.noop", (), {})] * batch
    while running:
        if meter.get(PAUSE):
            time.sleep(0.005)
            continue
        if mode == "bulk":
            app.send_many(calls)
        else:
            for _ in range(batch):
                noop.delay()
        meter.incrby(SENT, batch)
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
