"""Tasks for the prefork pool tests, imported by the test process and by every prefork child.

Children find the app as ``apps.prefork_tasks:make_app`` (a factory: a bare module-level app
would have to be built at import, before the test has chosen its database). Both sides call it
with ``PREFORK_TEST_DB`` set in the environment, which the children inherit, so they share the
SQLite broker and results in the test's tmp dir. Every task that waits does so on a file
appearing, polling every 10 ms and bounded, so no test can hang a child.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from celeriac import Celeriac, SoftTimeLimitExceeded
from celeriac.worker.pools import fetching, holding
from celeriac.worker.pools.prefork import PreforkPool

DB_ENV = "PREFORK_TEST_DB"
#: Set (to a Redis key prefix of the test's own): the broker is Redis and the children fetch
#: their own messages (``worker_prefork_fetch``); else the broker is the SQLite file too.
FETCH_ENV = "PREFORK_TEST_FETCH"
#: With FETCH_ENV: the lease's seconds and max_deliveries, when a test wants its own.
LEASE_ENV = "PREFORK_TEST_LEASE"
DELIVERIES_ENV = "PREFORK_TEST_MAX_DELIVERIES"
#: With FETCH_ENV: seconds a child holds the second message of a claim (``holding.HOLD_LIMIT``).
HOLD_ENV = "PREFORK_TEST_HOLD_LIMIT"
#: With FETCH_ENV: a child claims two when its last task took less (``fetching.PAIR_UNDER``).
PAIR_ENV = "PREFORK_TEST_PAIR_UNDER"
#: The pid of the test's own process, which builds the app too (to send tasks): the two limits
#: above are set in the processes that run tasks, never in it, where they would stay for the
#: next test of its xdist worker (a test that read the defaults there failed in CI).
TEST_PROCESS_ENV = "PREFORK_TEST_PROCESS"
APP_SPEC = "apps.prefork_tasks:make_app"
POOL_SPEC = "apps.prefork_tasks:RecordingPool"
WAIT_LIMIT = 30.0

#: The process that imported this module: a child forked from the fork server finds the
#: server's pid here (it imported the app once, for every child), a spawned child its own.
IMPORTED_IN = os.getpid()
#: An environment variable a test sets after the pool started (``p.origin`` reads it).
MARK_ENV = "PREFORK_TEST_MARK"

#: Grows by ~50 MB per ``leak`` call, in the child that runs it.
_leaked: list[bytes] = []


class RecordingPool(PreforkPool):
    """The prefork pool, remembered so a test can reach it (its loop, terminate, resize)."""

    made: list[RecordingPool] = []

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        RecordingPool.made.append(self)
        await super().start()


def wait_for_file(path: str, limit: float = WAIT_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {limit}s")
        time.sleep(0.01)


def mark(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (write then rename), so a reader sees all or none."""
    tmp = f"{path}.{os.getpid()}.tmp"
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def make_app() -> Celeriac:
    url = f"sqlite:///{Path(os.environ[DB_ENV]).resolve()}"
    fetch = os.environ.get(FETCH_ENV)
    if fetch:
        # children fetch their own messages from Redis, keys under the test's prefix; the
        # control and event channels too (``global_keyprefix``), or a worker of a test running
        # beside this one, named alike, answers this test's ``inspect`` in its worker's place
        app = Celeriac(
            "prefork_tasks",
            broker=os.environ.get("CELERIAC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            backend=url,
            broker_transport_options={
                "key_prefix": fetch,
                "global_keyprefix": fetch,
                "lease_seconds": float(os.environ.get(LEASE_ENV) or 3.0),
                "max_deliveries": int(os.environ.get(DELIVERIES_ENV) or 10),
            },
            worker_prefork_fetch=True,
        )
        runs_tasks = os.environ.get(TEST_PROCESS_ENV) != str(os.getpid())
        if runs_tasks and os.environ.get(HOLD_ENV):  # read by each child's Holder as it starts
            holding.HOLD_LIMIT = float(os.environ[HOLD_ENV])
        if runs_tasks and os.environ.get(PAIR_ENV):  # read at each claim
            fetching.PAIR_UNDER = float(os.environ[PAIR_ENV])
    else:
        app = Celeriac(
            "prefork_tasks",
            broker=url,
            backend=url,
            broker_transport_options={"poll_interval": 0.01},
        )

    @app.task(name="p.pid")
    def pid() -> int:
        return os.getpid()

    @app.task(name="p.origin")
    def origin() -> dict[str, object]:
        """Where this child came from: its pid, its parent's, the importer of this module."""
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "imported_in": IMPORTED_IN,
            "mark": os.environ.get(MARK_ENV),
        }

    @app.task(name="p.nothing", ignore_result=True)
    def nothing() -> None:
        """Over in well under a millisecond (no result stored)."""

    @app.task(name="p.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="p.async_loop")
    async def async_loop(x: int) -> list[int]:
        await asyncio.sleep(0.001)
        return [os.getpid(), id(asyncio.get_running_loop()), x * x]

    @app.task(name="p.block")
    def block(marker: str, release: str) -> int:
        """Say where it runs (``marker`` holds the pid), then wait for ``release``."""
        mark(marker, str(os.getpid()))
        wait_for_file(release)
        return os.getpid()

    @app.task(name="p.late_block", acks_late=True)
    def late_block(marker: str, release: str) -> int:
        """As ``p.block``, acked when it ends (its message stays leased while it runs)."""
        mark(marker, str(os.getpid()))
        wait_for_file(release)
        return os.getpid()

    @app.task(name="p.spin", time_limit=1.0)
    def spin(marker: str) -> None:
        """Runs past its 1 s hard limit (and ignores signals it could catch)."""
        mark(marker, str(os.getpid()))
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            pass

    @app.task(name="p.soft_sync", soft_time_limit=0.3)
    def soft_sync(release: str) -> str:
        try:
            wait_for_file(release, limit=10.0)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "released"

    @app.task(name="p.soft_async", soft_time_limit=0.3)
    async def soft_async() -> str:
        await asyncio.sleep(10)
        return "slept"

    @app.task(name="p.late_lost", acks_late=True, reject_on_worker_lost=True)
    def late_lost(runs: str, marker: str) -> int:
        """Appends its pid to ``runs``; the first run waits (to be killed), later ones return."""
        with open(runs, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        count = len(Path(runs).read_text(encoding="utf-8").split())
        if count == 1:
            mark(marker, str(os.getpid()))
            wait_for_file(marker + ".never")
        return count

    @app.task(name="p.leak")
    def leak(mbytes: int) -> list[int]:
        """Keep ``mbytes`` MB alive in this child; returns ``[pid, resident bytes before]``."""
        from celeriac.worker.pools.child import resident_memory

        before = resident_memory()
        _leaked.append(b"\x01" * (mbytes * 2**20))
        return [os.getpid(), before]

    return app
