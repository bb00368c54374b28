"""The celeriac side of the fleet: the Celery project of :mod:`.celery_side`, moved by changing
its imports, plus the settings a fleet shared with Celery needs.

Those settings: on RabbitMQ, queues declared as Celery declares them (the transport option
``max_priority`` 0; the priority queue carries its own ``x-max-priority``); on Redis, kombu's
key layout (``broker_transport_options={"layout": "kombu"}``); results in Celery's Redis
layout (``result_backend_transport_options={"layout": "celery"}``).
``celeriac -A interop.celeriac_side worker`` imports this module, which builds :data:`app`
from the session's names in the environment.
"""

from __future__ import annotations

import os

from celeriac import Celeriac
from interop.fleet_tasks import register
from interop.names import TAG_ENV, Names


def build_app(names: Names) -> Celeriac:
    app = Celeriac(
        "celeriac_side",
        broker=names.broker,
        backend=names.results,
        broker_transport_options=names.celeriac_transport_options(),
        result_backend_transport_options={"layout": "celery", "global_keyprefix": names.prefix},
        result_extended=True,
        task_queues=names.task_queues(),
        task_default_queue=names.mixed_queue,
    )
    register(app, "celeriac", names.runs)
    return app


if TAG_ENV in os.environ:
    app = build_app(Names.from_env())
