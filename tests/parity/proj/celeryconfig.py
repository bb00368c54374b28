"""The project's settings module, read with ``app.config_from_object("proj.celeryconfig")`` as in
Celery's "First Steps" guide ("Configuration").

The broker and backend are the shared Redis under a key prefix of this run's own: the test process
draws the prefix when it first imports the project and hands it to each worker it starts in
``PARITY_PREFIX``, so every process of one run talks to the same keys and no other run's.

Every lower-case name of this module is read as a setting (celeriac refuses an unknown one, where
Celery keeps it silently), which is why it has no ``from __future__ import annotations`` (see
``test_a_config_module_with_future_annotations``) and names no exchange in a variable.
"""

import os
import re
import uuid

from celeriac import Broadcast, Exchange, Queue

REDIS_URL = os.environ.get("PARITY_REDIS_URL", "redis://127.0.0.1:6379/11")
PREFIX = os.environ.get("PARITY_PREFIX") or f"parity-{uuid.uuid4().hex[:10]}:"

broker_url = REDIS_URL
result_backend = REDIS_URL
broker_transport_options = {"key_prefix": PREFIX}
result_backend_transport_options = {"key_prefix": PREFIX}

# "First Steps", Configuration
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
enable_utc = True

# "Routing Tasks": queues with exchanges and routing keys, and routes in the items form
task_queues = (
    Queue("celery", Exchange("celery"), routing_key="celery"),
    Queue("hipri"),
    Queue("feed_tasks", Exchange("feeds", type="topic"), routing_key="feed.#"),
    Queue("videos", Exchange("media", type="direct"), routing_key="media.video"),
    Queue("images", Exchange("media", type="direct"), routing_key="media.image"),
    Broadcast("broadcast_tasks"),
)
task_routes = (
    [
        ("proj.tasks.import_feed", {"queue": "feed_tasks", "routing_key": "feed.import"}),
        ("proj.tasks.reload_cache", {"queue": "broadcast_tasks", "exchange": "broadcast_tasks"}),
        ("proj.tasks.hipri_*", {"queue": "hipri"}),
        (re.compile(r"proj\.tasks\.(video|image)_.*"), {"queue": "media"}),
    ],
)
