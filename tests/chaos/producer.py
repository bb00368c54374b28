"""The chaos suite's load: a process that sends a steady stream of tasks and writes down each.

``python producer.py SENT_FILE STOP_FILE RATE``, with the broker in the environment (see
:mod:`chaos_app`; the producer talks to the broker directly, not through the fault proxy: the
faults are the workers'). Task ``seq`` (0, 1, ...) alternates between ``chaos.late`` and
``chaos.early`` and sleeps a few milliseconds, so that kills and freezes often land mid-run.

After each publish the broker accepted, one line ``sent <seq> <kind> <time>`` is appended to
``SENT_FILE``; a publish that fails (the broker restarting, its disk full) is tried again under
the same task id until it is accepted, with a ``resent <seq>`` line, since the failed attempt may
have reached the broker. It sends until ``STOP_FILE`` exists. The pace is kept by sleeping
until each task's slot, ``1 / RATE`` seconds apart (a late send is not made up for by a burst).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from chaos_app import BROKER_ENV, EARLY, LATE, OPTIONS_ENV, QUEUE_ENV, build_app

RETRY_PAUSE = 0.05
TASK_MS = (2.0, 5.0, 20.0)


def append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main(sent_file: str, stop_file: str, rate: float) -> int:
    app = build_app(
        os.environ[BROKER_ENV],
        json.loads(os.environ.get(OPTIONS_ENV, "{}")),
        os.environ[QUEUE_ENV],
    )
    start = time.monotonic()
    try:
        seq = 0
        while not os.path.exists(stop_file):
            slot = start + seq / rate
            pause = slot - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            late = seq % 2 == 0
            name, kind = (LATE, "late") if late else (EARLY, "early")
            task_id = str(uuid.uuid4())
            while True:
                try:
                    app.send_task(name, (seq, TASK_MS[seq % len(TASK_MS)]), task_id=task_id)
                    break
                except Exception as exc:  # any failed publish is tried again
                    append(sent_file, f"resent {seq}")
                    print(f"publish of {seq} failed ({exc!r}); again", file=sys.stderr)
                    time.sleep(RETRY_PAUSE)
            append(sent_file, f"sent {seq} {kind} {time.time():.3f}")
            seq += 1
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
