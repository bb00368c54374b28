"""A producer survives a Redis outage shorter than its ``task_publish_retry_policy``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from redis_server import RedisServer

from celeriac import Celeriac, TransportError


def count(app: Celeriac) -> int:
    transport = app.create_transport()

    async def size() -> int:
        await transport.connect()
        try:
            return await transport.size("celery")
        finally:
            await transport.close()

    return asyncio.run(size())


def test_a_send_during_a_short_outage_is_retried_until_redis_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    policy = {"max_retries": 50, "interval_start": 0.05, "interval_step": 0.05, "interval_max": 0.1}
    app = Celeriac("p", broker=server.url, task_publish_retry_policy=policy)
    try:
        app.send_task("t.first")  # connected, queue declared
        server.stop()
        restarted = threading.Event()

        def bring_back() -> None:
            server.start()
            restarted.set()

        # Redis returns while the producer is retrying: the send must not fail
        timer = threading.Timer(0.5, bring_back)
        timer.start()
        try:
            app.send_task("t.second")
        finally:
            timer.join()
        assert restarted.is_set()
        assert count(app) == 2  # the append-only file kept the first, the retry added the second
    finally:
        app.close()
        server.stop()


def test_a_send_fails_with_a_clear_error_once_retries_are_spent(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    policy = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.05, "interval_max": 0.05}
    app = Celeriac("p", broker=server.url, task_publish_retry_policy=policy)
    try:
        app.send_task("t.first")
        server.stop()
        with pytest.raises(TransportError):
            app.send_task("t.second")
    finally:
        app.close()
        server.stop()
