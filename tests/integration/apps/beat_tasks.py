"""An app with a periodic task, for the beat integration tests (``-A apps.beat_tasks``).

Built from the environment: ``ITEST_BEAT_BROKER`` (the broker URL), ``ITEST_BEAT_OPTIONS``
(broker transport options as JSON: a key prefix of the test's own), ``ITEST_BEAT_QUEUE`` (the
queue the ticks go to, one per test) and ``ITEST_RUNS_FILE``. Every run of ``beat.tick`` appends
the slot it was fired for (the message's ``beat_slot`` header) as one line to that file, so the
test counts firings per slot whatever process ran them.
"""

from __future__ import annotations

import os

import orjson

from celeriac import Celeriac, Task

BROKER_ENV = "ITEST_BEAT_BROKER"
OPTIONS_ENV = "ITEST_BEAT_OPTIONS"
QUEUE_ENV = "ITEST_BEAT_QUEUE"
RUNS_ENV = "ITEST_RUNS_FILE"

app = Celeriac(
    "beat_itest",
    broker=os.environ.get(BROKER_ENV, "memory://beat-itest"),
    backend="disabled",
    broker_transport_options=orjson.loads(os.environ.get(OPTIONS_ENV, "{}")),
    task_default_queue=os.environ.get(QUEUE_ENV, "celery"),
    beat_schedule={
        # catch_up="all": the slots that pass during a failover are fired late, not lost
        "tick": {"task": "beat.tick", "schedule": 1.0, "catch_up": "all"},
    },
)


@app.task(name="beat.tick", bind=True)
def tick(self: Task[[], None], tag: str = "tick") -> None:
    line = f"{tag} {self.request.get('beat_slot', 'manual')}\n"
    fd = os.open(os.environ[RUNS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
