"""Tasks for the worker-on-RabbitMQ integration tests.

The worker imports this module (``-A apps.amqp_tasks``) and builds its app from the environment:
``ITEST_AMQP_URL`` (the broker, in the tests' own vhost), ``ITEST_AMQP_QUEUE`` (the default
queue, one per test), ``ITEST_AMQP_MAX_DELIVERIES`` and ``ITEST_RUNS_FILE``. Each run of
``record`` appends ``<tag> <unix time>`` to the runs file: the tests count runs from a file, so
counting does not depend on the broker that a test restarts. No result backend: what ran is in
the file, and a backend would be a second service to keep alive through a broker restart.
"""

from __future__ import annotations

import os
import signal
import time

from celeriac import Celeriac

URL_ENV = "ITEST_AMQP_URL"
QUEUE_ENV = "ITEST_AMQP_QUEUE"
MAX_DELIVERIES_ENV = "ITEST_AMQP_MAX_DELIVERIES"
RUNS_ENV = "ITEST_RUNS_FILE"


def build_app(url: str, queue: str, runs_file: str, max_deliveries: int = 10) -> Celeriac:
    app = Celeriac(
        "amqp_itest",
        broker=url,
        backend=None,
        task_default_queue=queue,
        broker_transport_options={"max_deliveries": max_deliveries},
        broker_connection_max_retries=10,
    )

    def append(line: str) -> None:
        fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)

    @app.task(name="a.record", acks_late=True)
    def record(tag: str, pause: float = 0.0) -> str:
        if pause:
            time.sleep(pause)  # the task's own work, so that a run lasts long enough to interrupt
        append(f"{tag} {time.time():.3f}")
        return tag

    @app.task(name="a.kill_worker", acks_late=True)
    def kill_worker(tag: str) -> None:
        append(f"{tag}-started {time.time():.3f}")
        os.kill(os.getpid(), signal.SIGKILL)  # a poison message: its worker dies every time

    return app


if URL_ENV in os.environ:
    app = build_app(
        os.environ[URL_ENV],
        os.environ[QUEUE_ENV],
        os.environ[RUNS_ENV],
        int(os.environ.get(MAX_DELIVERIES_ENV, "10")),
    )
