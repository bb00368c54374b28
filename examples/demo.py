"""``make demo``: a worker on the embedded SQLite broker, a batch of tasks, their results.

Runs in a temporary directory so that every run starts from an empty ``celeriac.db``; the tasks
are queued first, then a real worker process is started, and the drain is timed from its start
until the last result is in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 2000


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="celeriac-demo-")
    os.chdir(workdir)
    sys.path.insert(0, str(HERE))
    from demo_tasks import add, divide, flaky, slow_square, total

    from celeriac import chord

    print(f"celeriac demo: broker and results in {workdir}/celeriac.db (SQLite, no server)")
    started = time.perf_counter()
    batch = [add.delay(i, i) for i in range(N)]
    sent = time.perf_counter() - started
    print(f"queued {N} add tasks with .delay() in {sent:.2f}s ({N / sent:,.0f} tasks/s)")
    squares = [slow_square.delay(i) for i in range(10)]
    retried = flaky.delay(2)
    failing = divide.delay(1, 0)
    later = add.apply_async((40, 2), countdown=1)
    workflow = (
        add.s(1, 1) | chord((add.s(i) for i in range(100)), total.s()) | add.s(1000)
    ).delay()

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celeriac",
            "-A",
            "demo_tasks",
            "worker",
            "-c",
            "2",
            "-l",
            "warning",
        ],
        env=env,
    )
    try:
        begun = time.perf_counter()
        values = [r.get(timeout=120) for r in batch]
        drained = time.perf_counter() - begun
        assert values == [i + i for i in range(N)], "wrong results"
        print(
            f"worker drained {N} tasks in {drained:.2f}s ({N / drained:,.0f} tasks/s, "
            "worker start-up included)"
        )
        print(f"async task results: {[r.get(timeout=30) for r in squares]}")
        print(f"retried task: {retried.get(timeout=30)!r} (state {retried.state})")
        try:
            failing.get(timeout=30)
        except ZeroDivisionError as exc:
            print(f"failing task: re-raised {type(exc).__name__}: {exc} (state {failing.state})")
        print(f"countdown task: {later.get(timeout=30)} (ran at least 1 s after it was sent)")
        print(
            f"workflow add(1, 1) | chord(add(x, i) for 100 i, total) | add(1000): "
            f"{workflow.get(timeout=60)}"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    print(f"worker stopped with a warm shutdown (exit status {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
