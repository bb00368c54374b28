"""The RabbitMQ of the AMQP integration tests: a vhost of their own, clean-up, stop and start.

Every test works in the vhost ``celeriac-test`` (created once per session with ``rabbitmqctl``,
which costs about a second per call, so it is not done per test) under queue names of its own, and
deletes what it declared. ``stop_app``/``start_app`` restart the broker for the fault tests; every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from suite_rules import require_tool

#: The tests' vhost: one per xdist worker (``make unit`` runs two), so that tests running at
#: the same time never share a queue name (contract tests use fixed names such as ``q``).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
VHOST = f"celeriac-test-{WORKER}" if WORKER else "celeriac-test"
URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
CTL_TIMEOUT = 60.0


def rabbitmqctl(*args: str, check: bool = True) -> str:
    """Run ``rabbitmqctl`` (bounded); returns its stdout."""
    ctl = require_tool("rabbitmqctl", "the RabbitMQ tests' vhost, listings and restarts")
    done = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=CTL_TIMEOUT)
    if check and done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr[:500]}")
    return done.stdout


def ensure_vhost() -> None:
    rabbitmqctl("add_vhost", VHOST, check=False)  # fails harmlessly when it exists
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")


def in_thread(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on a loop of its own thread (the caller may be inside a running loop)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(CTL_TIMEOUT)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def delete(queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
    """Delete queues and exchanges of the test vhost (missing ones are fine)."""
    import aio_pika
    from aiormq.exceptions import AMQPError

    queues, exchanges = sorted(set(queues)), sorted(set(exchanges))

    async def run() -> None:
        connection = await aio_pika.connect(URL)
        async with connection:
            for name, is_queue in [(q, True) for q in queues] + [(e, False) for e in exchanges]:
                with contextlib.suppress(AMQPError):
                    channel = await (await connection.channel()).get_underlay_channel()
                    if is_queue:
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)

    if queues or exchanges:
        in_thread(run)


def queue_table() -> dict[str, dict[str, str]]:
    """``name -> {type, arguments, messages}`` for the test vhost's queues."""
    out = rabbitmqctl(
        "list_queues",
        "-q",
        "-p",
        VHOST,
        "--no-table-headers",
        "name",
        "type",
        "messages",
        "arguments",
    )
    table: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4:
            table[parts[0]] = {"type": parts[1], "messages": parts[2], "arguments": parts[3]}
    return table


def port_open(port: int = 5672) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_app() -> None:
    rabbitmqctl("stop_app")


def start_app(timeout: float = 60.0) -> None:
    """Start the app again and wait until AMQP answers."""
    rabbitmqctl("start_app")
    deadline = time.monotonic() + timeout
    while not port_open():
        if time.monotonic() > deadline:
            raise AssertionError("RabbitMQ did not come back within the timeout")
        time.sleep(0.2)
