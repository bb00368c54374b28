"""A real Flower 2 for the interop tests: ``celery -A interop.celery_side --broker URL flower`` on
a free loopback port, its HTTP API open without authentication (``FLOWER_UNAUTHENTICATED_API``, as
Flower 2 requires for an API without auth), read and driven with the standard library's HTTP
client. The process is a :class:`worker_harness.WorkerProcess` (its output kept for failures);
:meth:`Flower.close` always stops it.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from typing import Any

from worker_harness import WorkerProcess, wait_until

from interop.fleet import CELERY_APP, Fleet

START_TIMEOUT = 30.0
#: Every key of a worker's ``stats`` reply that Flower reads (its worker page and inspector).
STATS_KEYS = {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"}


def free_port() -> int:
    """A port nobody listens on now (the OS's choice for a throwaway bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Flower:
    def __init__(self, fleet: Fleet) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "celery", "-A", CELERY_APP, "--broker", fleet.names.broker]
        args.append("flower")
        args += [f"--port={self.port}", "--address=127.0.0.1", "--inspect_timeout=2000"]
        env = fleet.env(FLOWER_UNAUTHENTICATED_API="true")
        self.process = WorkerProcess(args, env, fleet.root)

    def wait_ready(self) -> None:
        """Until its HTTP server answers (fails at once if the process ends)."""

        def answers() -> bool:
            if not self.process.running:
                raise AssertionError(f"Flower ended\n{self.process.output()}")
            try:
                return self.request("GET", "/healthcheck")[0] == 200
            except OSError:
                return False

        wait_until(answers, START_TIMEOUT, "Flower to answer", interval=0.1)

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        """One HTTP request; the status and body (an error status is returned, not raised)."""
        data = b"" if method == "POST" else None
        call = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(call, timeout=30) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def json(self, path: str, method: str = "GET") -> Any:
        status, body = self.request(method, path)
        assert status == 200, f"{method} {path}: {status} {body[:500]!r}\n{self.process.output()}"
        return json.loads(body)

    def close(self) -> None:
        self.process.stop()
