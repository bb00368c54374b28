"""Typed task arguments and results between Celery 5.7 and celeriac, over RabbitMQ with rpc://.

JSON has no dates, decimals, UUIDs or bytes; kombu sends them in ``{"__type__", "__value__"}``
envelopes. Both directions run through real processes and the real broker: a Celery client
sends to a celeriac worker and reads the result, and a celeriac client sends to a Celery worker
and reads the result. Each worker reports the types it received, and the caller compares the
values it gets back. Celery 5.7 is a test dependency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from apps.interop_tasks import BROKER, QUEUE_ENV, build_app
from worker_harness import WorkerProcess, child_env, start_cli_worker

from conftest import require_service

pytestmark = [pytest.mark.amqp]

#: Celery 5.7 is a test dependency: its command runs from this venv.
CELERY = [sys.executable, "-m", "celery"]
AMQP = "amqp://guest:guest@127.0.0.1:5672//"

#: Every type kombu wraps; the last three travel as keyword arguments.
VALUES: list[Any] = [
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
    dt.date(2024, 2, 29),
    dt.time(23, 59),
    decimal.Decimal("19.990"),
    uuid.UUID(int=7),
    "café".encode(),
    b"\xff\x00",
]
TYPES = ["datetime", "date", "time", "Decimal", "UUID", "bytes", "bytes"]

VALUES_SOURCE = """
import datetime as dt, decimal, uuid
VALUES = [
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc), dt.date(2024, 2, 29),
    dt.time(23, 59), decimal.Decimal("19.990"), uuid.UUID(int=7), "café".encode(), b"\\xff\\x00",
]
"""


@pytest.fixture
def queue() -> Iterator[str]:
    require_service("RabbitMQ", 5672)
    name = f"interop-itest-{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(_delete_queues(name, f"{name}.dlq"))


async def _delete_queues(*names: str) -> None:
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


def test_a_celery_client_sends_typed_arguments_to_a_celeriac_worker(
    queue: str, tmp_path: Path
) -> None:
    client = VALUES_SOURCE + textwrap.dedent(
        f"""
        import json
        from celery import Celery
        app = Celery("c", broker={BROKER!r}, backend="rpc://")
        app.conf.task_default_queue = {queue!r}
        result = app.send_task(
            "interop.describe",
            args=VALUES[:4],
            kwargs={{"ref": VALUES[4], "text": VALUES[5], "raw": VALUES[6]}},
        )
        got = result.get(timeout=20)
        back = [type(v).__name__ for v in got["values"]]
        print(json.dumps({{"types": got["types"], "same": got["values"] == VALUES, "back": back}}))
        """
    )
    worker = start_cli_worker("apps.interop_tasks", child_env({QUEUE_ENV: queue}), tmp_path)
    try:
        done = subprocess.run(
            [sys.executable, "-c", client],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        worker.stop()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"types": TYPES, "same": True, "back": TYPES}


CELERY_WORKER_APP = """
from celery import Celery
app = Celery("celery_side", broker={broker!r}, backend="rpc://")
app.conf.task_default_queue = {queue!r}

@app.task(name="interop.describe")
def describe(*args, **kwargs):
    values = [*args, *kwargs.values()]
    return {{"types": [type(v).__name__ for v in values], "values": values}}
"""


def test_a_celeriac_client_sends_typed_arguments_to_a_celery_worker(
    queue: str, tmp_path: Path
) -> None:
    (tmp_path / "celery_side.py").write_text(CELERY_WORKER_APP.format(broker=BROKER, queue=queue))
    args = [*CELERY, "-A", "celery_side", "worker", "-P", "solo"]
    args += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "info"]
    worker = WorkerProcess(args, child_env({}), tmp_path)
    app = build_app(queue)
    try:
        worker.wait_for_line(r"celery@\S+ ready\.", timeout=30)
        describe = app.tasks["interop.describe"]
        got = describe.delay(*VALUES[:4], ref=VALUES[4], text=VALUES[5], raw=VALUES[6]).get(
            timeout=20
        )
    finally:
        # killed: a Celery 5.7 worker here takes ~10 s to exit after its last shutdown step,
        # warm or cold (and its solo pool's cold shutdown raises NotImplementedError)
        worker.send(signal.SIGKILL)
        worker.stop()
        app.close()
    assert got["types"] == TYPES
    assert got["values"] == VALUES
    assert [type(v).__name__ for v in got["values"]] == TYPES
