"""Celery 5.7's side of the oracle, imported by ``celery -A oracle_celery_app worker``."""

from __future__ import annotations

from celery import Celery, chain
from oracle_tasks import REDIS_URL, declare

app = Celery("oracle", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)
t = declare(app, chain)
