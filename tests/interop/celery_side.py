"""The Celery 5.7 side of the fleet: a Celery project as its users configure it.

``celery -A interop.celery_side worker`` (and ``inspect``, ``control``, ``flower``) import this
module, which builds :data:`app` from the session's names in the environment; the test process
builds its own client with :func:`build_app`.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from interop.fleet_tasks import register
from interop.names import TAG_ENV, Names


def build_app(names: Names, *, current: bool = True) -> Any:
    """A Celery app on the session's vhost, results in Redis under the session's prefix."""
    app = Celery("celery_side", broker=names.broker, backend=names.results, set_as_current=current)
    app.conf.update(
        task_queues=names.task_queues(),
        task_default_queue=names.mixed_queue,
        broker_transport_options=names.celery_transport_options(),
        result_backend_transport_options={"global_keyprefix": names.prefix},
        result_extended=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
    )
    register(app, "celery", names.runs)
    return app


if TAG_ENV in os.environ:
    app = build_app(Names.from_env())
