"""The prefork pool with real child processes and real signals, on the SQLite broker.

Most tests run the worker in this process (:func:`celeriac.testing.worker_thread`) with
:class:`apps.prefork_tasks.RecordingPool`, the prefork pool remembered so a test can call
``terminate``/``resize`` on its loop and see its children; two tests run the CLI worker as a
process. Children import ``apps.prefork_tasks`` by name: children inherit ``sys.path``,
where pytest put this directory. Every wait is on a result, a marker file or a process state,
each with a deadline; no sleep stands in for synchronisation.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from apps.prefork_tasks import (
    APP_SPEC,
    DB_ENV,
    DELIVERIES_ENV,
    FETCH_ENV,
    HOLD_ENV,
    LEASE_ENV,
    MARK_ENV,
    PAIR_ENV,
    POOL_SPEC,
    TEST_PROCESS_ENV,
    RecordingPool,
    make_app,
)
from worker_harness import child_env

from celeriac import (
    Celeriac,
    ImproperlyConfigured,
    NotRegistered,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
    states,
)
from celeriac.testing import worker_thread
from celeriac.worker.pools.base import PoolOptions
from celeriac.worker.pools.prefork import PreforkPool
from conftest import require_service

T = TypeVar("T")
MB = 2**20
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["pipe", "fetch"])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The test's SQLite file, named in the environment that the children inherit. Each test
    runs twice: children handed their tasks by the worker (the broker is that SQLite file too),
    and children that fetch their own from Redis (``worker_prefork_fetch``), under a key
    prefix of the test's own, removed afterwards."""
    yield from _database(request.param, tmp_path, monkeypatch)


@pytest.fixture
def fetch_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """As ``db``, children that fetch their own messages only."""
    yield from _database("fetch", tmp_path, monkeypatch)


def _database(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "x.db"
    monkeypatch.setenv(DB_ENV, str(path))
    monkeypatch.setenv(TEST_PROCESS_ENV, str(os.getpid()))
    if mode == "pipe":
        yield path
        return
    require_service("Redis", 6379)
    prefix = f"prefork-fetch-{uuid.uuid4().hex[:12]}:"
    monkeypatch.setenv(FETCH_ENV, prefix)
    try:
        yield path
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@contextmanager
def prefork(
    start_method: str | None = None, **options: Any
) -> Iterator[tuple[Celeriac, RecordingPool]]:
    """A prefork worker in a thread of this process; afterwards, every child it had is gone."""
    app = make_app()
    if start_method is not None:
        app.conf.update(worker_pool_start_method=start_method)
    options.setdefault("concurrency", 2)
    try:
        with worker_thread(app, timeout=30, pool=POOL_SPEC, app_spec=APP_SPEC, **options):
            pool = RecordingPool.made[-1]
            yield app, pool
        assert pool.child_pids() == [], "children left after stop"
    finally:
        app.close()


def on_loop(pool: RecordingPool, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Run ``coro`` on the worker's event loop (pool methods belong to it)."""
    return asyncio.run_coroutine_threadsafe(coro, pool.loop).result(timeout)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def read_pid(marker: Path, timeout: float = 15.0) -> int:
    """The pid a task wrote to ``marker`` once it started."""
    wait_until(marker.exists, f"{marker.name} to appear", timeout)
    return int(marker.read_text(encoding="utf-8"))


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone: it runs no code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# -- results ------------------------------------------------------------------------------------


def test_sync_and_async_results_with_one_event_loop_per_child(db: Path) -> None:
    with prefork() as (app, pool):
        children = pool.child_pids()
        assert len(children) == 2
        adds = [app.tasks["p.add"].delay(i, 1) for i in range(20)]
        squares = [app.tasks["p.async_loop"].delay(i) for i in range(40)]
        assert [r.get(timeout=15) for r in adds] == [i + 1 for i in range(20)]
        runs = [r.get(timeout=15) for r in squares]
    assert [x for _, _, x in runs] == [i * i for i in range(40)]
    loops: dict[int, set[int]] = {}
    for pid, loop_id, _ in runs:
        loops.setdefault(pid, set()).add(loop_id)
    assert set(loops) <= set(children), "async tasks ran outside the pool's children"
    assert os.getpid() not in loops
    assert all(len(ids) == 1 for ids in loops.values()), loops  # one loop per child, reused


def test_start_fails_clearly_without_an_importable_app(db: Path) -> None:
    app = make_app()
    try:
        with pytest.raises(ImproperlyConfigured, match="needs an importable app"):
            asyncio.run(PreforkPool(app, 1, "h").start())
        bad = PoolOptions(app_spec="apps.no_such_module:app")
        with pytest.raises(ImproperlyConfigured, match=r"cannot import 'apps\.no_such_module'"):
            asyncio.run(PreforkPool(app, 1, "h", bad).start())
    finally:
        app.close()


def test_a_task_the_children_do_not_know_fails_with_not_registered(db: Path) -> None:
    with prefork() as (app, _):

        @app.task(name="p.only_in_the_parent")
        def only_in_the_parent() -> None: ...

        with pytest.raises(NotRegistered):
            only_in_the_parent.delay().get(timeout=10)
        assert app.tasks["p.add"].delay(1, 2).get(timeout=10) == 3


# -- time limits ----------------------------------------------------------------------------------


def test_hard_time_limit_kills_only_that_child_and_replaces_it(db: Path, tmp_path: Path) -> None:
    with prefork() as (app, pool):
        neighbour = app.tasks["p.block"].delay(str(tmp_path / "n"), str(tmp_path / "go"))
        neighbour_pid = read_pid(tmp_path / "n")
        spin = app.tasks["p.spin"].delay(str(tmp_path / "s"))  # time_limit=1.0
        spun_pid = read_pid(tmp_path / "s")
        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded, match=r"hard time limit \(1s\)"):
            spin.get(timeout=10)
        assert time.monotonic() - started < 5
        assert spin.state == states.FAILURE
        (tmp_path / "go").touch()
        assert neighbour.get(timeout=10) == neighbour_pid  # the other task never noticed
        wait_until(lambda: len(pool.child_pids()) == 2, "a replacement child")
        assert spun_pid not in pool.child_pids()
        assert neighbour_pid in pool.child_pids()
        assert not alive(spun_pid)
        ran_on = {app.tasks["p.pid"].delay().get(timeout=10) for _ in range(6)}
        assert spun_pid not in ran_on


def test_soft_time_limit_sync_task_cleans_up_async_task_fails(db: Path, tmp_path: Path) -> None:
    with prefork() as (app, pool):
        children = pool.child_pids()
        sync = app.tasks["p.soft_sync"].delay(str(tmp_path / "never"))  # soft_time_limit=0.3
        aio = app.tasks["p.soft_async"].delay()
        assert sync.get(timeout=10) == "cleaned up"
        with pytest.raises(SoftTimeLimitExceeded, match=r"soft time limit \(0.3s\)"):
            aio.get(timeout=10)
        assert aio.state == states.FAILURE
        assert pool.child_pids() == children  # a soft limit costs no child


# -- children lost ------------------------------------------------------------------------------


def test_kill_9_of_a_child_mid_task_is_worker_lost(db: Path, tmp_path: Path) -> None:
    with prefork() as (app, pool):
        blocked = app.tasks["p.block"].delay(str(tmp_path / "m"), str(tmp_path / "never"))
        pid = read_pid(tmp_path / "m")
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLostError, match="SIGKILL"):
            blocked.get(timeout=10)
        wait_until(lambda: len(pool.child_pids()) == 2 and pid not in pool.child_pids(), "refill")
        assert app.tasks["p.add"].delay(2, 3).get(timeout=10) == 5


def test_acks_late_reject_on_worker_lost_is_redelivered(db: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with prefork() as (app, _):
        result = app.tasks["p.late_lost"].delay(str(runs), str(tmp_path / "m"))
        first = read_pid(tmp_path / "m")
        os.kill(first, signal.SIGKILL)
        assert result.get(timeout=15) == 2  # the second run saw the first one's line
    pids = [int(line) for line in runs.read_text(encoding="utf-8").split()]
    assert len(pids) == 2
    assert pids[0] == first
    assert pids[1] != first


# -- per-child limits -----------------------------------------------------------------------------


def test_max_tasks_per_child_replaces_children_without_losing_tasks(db: Path) -> None:
    with prefork(max_tasks_per_child=2) as (app, _):
        results = [app.tasks["p.pid"].delay() for _ in range(20)]
        pids = [r.get(timeout=30) for r in results]
    assert all(isinstance(p, int) for p in pids)
    assert len(set(pids)) >= 10, sorted(set(pids))


# -- how children start ---------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux's default")
def test_children_fork_from_a_server_that_imported_the_app_and_get_the_current_environment(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prefork(max_tasks_per_child=1, concurrency=1) as (app, _):
        first = app.tasks["p.origin"].delay().get(timeout=15)
        monkeypatch.setenv(MARK_ENV, "set after the pool started")
        later = [app.tasks["p.origin"].delay().get(timeout=15) for _ in range(3)]
    server = first["ppid"]
    assert server != os.getpid()  # not the worker: its fork server
    for run in [first, *later]:
        assert run["ppid"] == server, [first, *later]
        assert run["imported_in"] == server != run["pid"], [first, *later]  # came imported
    assert len({run["pid"] for run in [first, *later]}) == 4  # one child per task
    assert first["mark"] is None
    # a child has the worker's environment as it was when the child started: the one after
    # the first may have started before the change, the ones after it did not
    assert [run["mark"] for run in later[1:]] == ["set after the pool started"] * 2
    wait_until(lambda: not alive(server), "the fork server to stop with the pool")


def test_spawned_children_import_the_app_themselves(db: Path) -> None:
    with prefork("spawn") as (app, _):
        run = app.tasks["p.origin"].delay().get(timeout=15)
    assert run["ppid"] == os.getpid()
    assert run["imported_in"] == run["pid"]


def test_max_memory_per_child_replaces_a_leaking_child(db: Path) -> None:
    limit = 256 * MB
    with prefork(concurrency=1, max_memory_per_child=limit // 1024) as (app, _):  # KiB
        results = [app.tasks["p.leak"].delay(50) for _ in range(10)]
        runs = [r.get(timeout=30) for r in results]
    pids = [pid for pid, _ in runs]
    assert len(set(pids)) >= 2, runs
    # a child over the limit after a task never gets another: each task starts below it
    assert max(before for _, before in runs) <= limit, runs


# -- terminate and resize -----------------------------------------------------------------------


def test_terminate_a_running_task_revokes_it(db: Path, tmp_path: Path) -> None:
    with prefork() as (app, pool):
        blocked = app.tasks["p.block"].delay(str(tmp_path / "m"), str(tmp_path / "never"))
        pid = read_pid(tmp_path / "m")
        assert on_loop(pool, pool.terminate("no-such-task")) is False
        assert on_loop(pool, pool.terminate(blocked.id)) is True
        with pytest.raises(TaskRevokedError, match="terminated"):
            blocked.get(timeout=10)
        assert blocked.state == states.REVOKED
        wait_until(lambda: not alive(pid), f"terminated child {pid} to exit")
        wait_until(lambda: len(pool.child_pids()) == 2, "a replacement child")
        assert app.tasks["p.add"].delay(1, 1).get(timeout=10) == 2


def test_a_request_waiting_for_a_busy_child_is_not_run_once_revoked(
    db: Path, tmp_path: Path
) -> None:
    """The pool holds the next request in the parent while its only child is busy (it never
    sits in a child's pipe), so a revoke that arrives meanwhile still stops it. A child that
    fetches claims nothing while busy: the message waits on the broker, and the revoke reaches
    the child before its next claim (which hands the revoked message to the worker)."""
    with prefork(concurrency=1) as (app, pool):
        release = tmp_path / "release"
        blocked = app.tasks["p.block"].delay(str(tmp_path / "m"), str(release))
        read_pid(tmp_path / "m")
        waiting = app.tasks["p.add"].delay(1, 2)
        children = pool._children
        assert children is not None
        if not os.environ.get(FETCH_ENV):
            wait_until(
                lambda: any(w.request.id == waiting.id for w in list(children._waiters)),
                "the second request to wait in the pool",
            )
        app.control.revoke(waiting.id)
        wait_until(lambda: waiting.id in pool.revoked, "the revoke to reach the worker")
        release.touch()
        assert isinstance(blocked.get(timeout=10), int)
        with pytest.raises(TaskRevokedError):
            waiting.get(timeout=10)
        assert waiting.state == states.REVOKED
        assert app.tasks["p.add"].delay(2, 2).get(timeout=10) == 4


def test_resize_grows_and_shrinks(db: Path) -> None:
    with prefork(concurrency=1) as (app, pool):
        (first,) = pool.child_pids()
        on_loop(pool, pool.resize(3))
        wait_until(lambda: len(pool.child_pids()) == 3, "three children")
        grown = pool.child_pids()
        assert first in grown
        on_loop(pool, pool.resize(1))
        wait_until(lambda: len(pool.child_pids()) == 1, "one child")
        retired = set(grown) - set(pool.child_pids())
        assert len(retired) == 2
        wait_until(lambda: not any(alive(p) for p in retired), "retired children to exit")
        assert pool.concurrency == 1
        assert app.tasks["p.pid"].delay().get(timeout=10) == pool.child_pids()[0]


# -- the CLI worker -------------------------------------------------------------------------------


class CliWorker:
    """``python -m celeriac ... worker -P prefork`` as a process, its stderr kept line by line."""

    def __init__(self, db: Path, cwd: Path, *extra: str) -> None:
        env = child_env({DB_ENV: str(db)})
        args = [sys.executable, "-m", "celeriac", "-A", APP_SPEC, "worker", "-P", "prefork"]
        self.proc = subprocess.Popen(
            [*args, "-c", "2", "-l", "info", *extra],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as under a service manager
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for_line(r" ready: pool=prefork", timeout=30)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 15.0) -> None:
        regex = re.compile(pattern)
        with self._changed:
            if not self._changed.wait_for(
                lambda: any(regex.search(line) for line in self.lines), timeout
            ):
                raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        """Make sure it is gone (SIGKILL if it is still there), and its reader too."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def test_cli_worker_children_log_and_leave_on_warm_shutdown(db: Path, tmp_path: Path) -> None:
    worker = CliWorker(db, tmp_path, "--max-tasks-per-child", "3")
    app = make_app()
    try:
        pids = {app.tasks["p.pid"].delay().get(timeout=15) for _ in range(8)}
        worker.wait_for_line(r"INFO/celeriac-prefork-\d+\] Task p\.pid\[.*succeeded")
        worker.wait_for_line(r"prefork: replacing child \d+: it ran 3 tasks")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(15) == 0
        assert not any(alive(p) for p in pids), worker.output()
    finally:
        worker.stop()
        app.close()


def test_children_exit_when_the_worker_is_killed(db: Path, tmp_path: Path) -> None:
    worker = CliWorker(db, tmp_path)
    app = make_app()
    try:
        for name in ("a", "b"):
            app.tasks["p.block"].delay(str(tmp_path / name), str(tmp_path / "never"))
        pids = [read_pid(tmp_path / "a"), read_pid(tmp_path / "b")]
        assert len(set(pids)) == 2
        worker.proc.kill()
        worker.proc.wait(10)
        wait_until(lambda: not any(alive(p) for p in pids), "orphaned children to exit", 10)
    finally:
        worker.stop()
        app.close()


def test_sigterm_to_the_whole_process_group_spares_busy_children(db: Path, tmp_path: Path) -> None:
    """systemd's default KillMode and ``timeout`` signal the whole group: the busy child must
    finish its task during the warm shutdown instead of dying with it."""
    worker = CliWorker(db, tmp_path)
    app = make_app()
    try:
        release = tmp_path / "release"
        result = app.tasks["p.block"].delay(str(tmp_path / "a"), str(release))
        child = read_pid(tmp_path / "a")
        os.killpg(worker.proc.pid, signal.SIGTERM)
        worker.wait_for_line(r"warm shutdown")
        assert alive(child)
        release.touch()
        assert result.get(timeout=15) == child
        assert worker.proc.wait(15) == 0
        # nothing in the group died: not the child, not the fork server it was forked from
        # (through which the worker learns of its children's exits)
        assert "replacing child" not in worker.output()
        assert "WorkerLostError" not in worker.output()
    finally:
        worker.stop()
        app.close()


def test_autoscale_grows_the_prefork_pool_under_a_backlog(db: Path, tmp_path: Path) -> None:
    worker = CliWorker(db, tmp_path, "--autoscale", "3,1")
    app = make_app()
    try:
        release = tmp_path / "release"
        results = [app.tasks["p.block"].delay(str(tmp_path / name), str(release)) for name in "abc"]
        # three tasks blocked at once need three children: the pool grew from 2 to 3
        pids = {read_pid(tmp_path / name) for name in "abc"}
        assert len(pids) == 3
        worker.wait_for_line(r"autoscale: 2 -> 3")
        release.touch()
        assert {r.get(timeout=15) for r in results} == pids
    finally:
        worker.stop()
        app.close()


def test_remote_revoke_with_terminate_kills_the_running_task(db: Path, tmp_path: Path) -> None:
    worker = CliWorker(db, tmp_path)
    app = make_app()
    try:
        result = app.tasks["p.block"].delay(str(tmp_path / "a"), str(tmp_path / "never"))
        child = read_pid(tmp_path / "a")
        app.control.revoke(result.id, terminate=True)
        with pytest.raises(TaskRevokedError, match="terminated"):
            result.get(timeout=15)
        wait_until(lambda: not alive(child), "the terminated child to exit")
        assert app.tasks["p.add"].delay(1, 2).get(timeout=15) == 3  # the pool refilled
    finally:
        worker.stop()
        app.close()


# -- children that fetch their own messages ------------------------------------------------------


def test_a_fetched_task_that_outlives_its_lease_has_it_renewed(
    fetch_db: Path, tmp_path: Path
) -> None:
    """The worker reads the board and renews the lease (3 s here) of an ``acks_late`` task a
    child runs, so the message is not given to another child while it runs; ``inspect
    active`` and ``stats`` see the task, read from the board."""
    prefix = os.environ[FETCH_ENV]
    client = redis.Redis.from_url(REDIS_URL)
    with prefork() as (app, _pool):
        release = tmp_path / "release"
        blocked = app.tasks["p.late_block"].delay(str(tmp_path / "m"), str(release))
        read_pid(tmp_path / "m")
        leased = f"{prefix}q:celery:leased"
        members: list[Any] = list(client.zrange(leased, 0, -1))
        [member] = members
        first = float(client.zscore(leased, member) or 0)
        wait_until(
            lambda: float(client.zscore(leased, member) or 0) > first,
            "the lease to be renewed",
            timeout=10,
        )
        active = app.control.inspect(timeout=5).active() or {}
        [running] = [r for rs in active.values() for r in rs]
        assert (running["id"], running["name"]) == (blocked.id, "p.late_block")
        stats = app.control.inspect(timeout=5).stats() or {}
        [totals] = [s["total"] for s in stats.values()]
        assert totals.get("p.late_block") == 1
        release.touch()
        assert isinstance(blocked.get(timeout=10), int)
        assert (tmp_path / "m").read_text(encoding="utf-8") == str(blocked.get())  # ran once
    client.close()


def _hold_behind_a_task_that_lasts(app: Celeriac, tmp_path: Path, held: int = 1) -> int:
    """Make a child claim several messages and run the first, which lasts: one child blocks on
    ``p.block`` (``b0``), then one batch of ``p.nothing``, ``p.block`` (``b1``) and ``held``
    more ``p.block`` (``b2``..., released already) reaches the other child, which claims
    ``p.nothing`` alone (its last claim found nothing), then the blocks at once (the queue was
    deep, the task short), running ``b1`` and holding the rest. Returns the pid of the first
    child, blocked on ``b0``. The test sets ``PAIR_ENV``: on a loaded machine ``p.nothing`` may
    take more than the 10 ms under which a child claims several."""
    app.tasks["p.block"].delay(str(tmp_path / "m0"), str(tmp_path / "b0"))
    first = read_pid(tmp_path / "m0")
    rest = [f"{n}" for n in range(2, 2 + held)]
    for n in rest:
        (tmp_path / f"b{n}").touch()
    app.send_many(
        [
            ("p.nothing", (), {}),
            ("p.block", (str(tmp_path / "m1"), str(tmp_path / "b1")), {}),
            *[("p.block", (str(tmp_path / f"m{n}"), str(tmp_path / f"b{n}")), {}) for n in rest],
        ]
    )
    assert read_pid(tmp_path / "m1") != first
    return first


def test_a_message_held_behind_a_task_that_lasts_goes_to_the_first_child_free(
    fetch_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child whose queue is deep claims two messages and holds the second while the first
    runs; when that run lasts, the held one goes back to the head of its queue, where the first
    child free claims it, rather than waiting behind the run (fair dispatch, as ``-O fair``)."""
    monkeypatch.setenv(LEASE_ENV, "60")  # not back in its queue by its lease's end
    monkeypatch.setenv(PAIR_ENV, "5")
    prefix = os.environ[FETCH_ENV]
    client = redis.Redis.from_url(REDIS_URL)
    with prefork() as (app, _pool):
        first = _hold_behind_a_task_that_lasts(app, tmp_path)
        ready = f"{prefix}q:celery:ready"
        wait_until(lambda: client.zcard(ready) == 1, "b2 to be given back")
        members: list[Any] = list(client.zrange(ready, 0, -1))
        [member] = members
        assert client.hget(f"{prefix}q:celery:cnt", member) == b"1"  # claimed once, not run
        (tmp_path / "b0").touch()  # the first child comes free and claims b2; b1 still blocks
        assert read_pid(tmp_path / "m2") == first
        (tmp_path / "b1").touch()
    client.close()


def test_the_rest_of_a_batch_held_behind_a_task_that_lasts_goes_back_together(
    fetch_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child claims several messages at once when its tasks are short: held behind a
    task that lasts, the three it did not run go back to their queue together, in their order,
    each claimed once, and the first child free runs them. The hold limit is 0.5 s here, which
    keeps the claim at all four queued however long ``p.nothing`` takes on a loaded machine (a
    claim's size keeps the last held waiting about half the limit)."""
    monkeypatch.setenv(HOLD_ENV, "0.5")
    monkeypatch.setenv(LEASE_ENV, "60")
    monkeypatch.setenv(PAIR_ENV, "5")
    prefix = os.environ[FETCH_ENV]
    client = redis.Redis.from_url(REDIS_URL)
    with prefork() as (app, _pool):
        first = _hold_behind_a_task_that_lasts(app, tmp_path, held=3)
        ready = f"{prefix}q:celery:ready"
        wait_until(lambda: client.zcard(ready) == 3, "b2, b3 and b4 to be given back")
        members: list[Any] = list(client.zrange(ready, 0, -1))
        counts = [client.hget(f"{prefix}q:celery:cnt", member) for member in members]
        assert counts == [b"1", b"1", b"1"]  # claimed once, not run
        assert not any((tmp_path / f"m{n}").exists() for n in (2, 3, 4))
        (tmp_path / "b0").touch()  # the first child comes free and runs them; b1 still blocks
        assert [read_pid(tmp_path / f"m{n}") for n in (2, 3, 4)] == [first] * 3
        (tmp_path / "b1").touch()
    client.close()


def test_what_a_killed_child_held_is_given_back_as_it_dies_not_at_its_lease_end(
    fetch_db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A child killed (a segfault, the OOM killer: SIGKILL here) while it holds the rest of a
    claim: the worker reads what it held from the board as it reaps it and gives that back to
    the queue at once, where the next child runs it, long before the 60 s lease would have
    brought it back (the hold limit is 60 s too: only the child's death ends the hold)."""
    monkeypatch.setenv(HOLD_ENV, "60")
    monkeypatch.setenv(LEASE_ENV, "60")
    monkeypatch.setenv(PAIR_ENV, "5")
    caplog.set_level("INFO", logger="celeriac.worker")
    with prefork() as (app, _pool):
        _hold_behind_a_task_that_lasts(app, tmp_path, held=3)
        holder = read_pid(tmp_path / "m1")
        (tmp_path / "m1").unlink()
        (tmp_path / "b1").touch()  # b1 runs again (its child was lost): it must not block
        os.kill(holder, signal.SIGKILL)
        runners = [read_pid(tmp_path / f"m{n}") for n in (2, 3, 4)]
        assert holder not in runners
        assert f"child {holder} died holding 3 messages: giving them back" in caplog.text
        (tmp_path / "b0").touch()


def test_a_child_told_to_fetch_elsewhere_while_it_holds_a_message_gives_it_back(
    fetch_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that holds the second message of a claim (its hold limit set long here) and is
    told to fetch from another queue instead (``add_consumer``, ``cancel_consumer``; a stop or
    a retirement goes the same way) puts that message back in its queue: it runs later."""
    monkeypatch.setenv(HOLD_ENV, "60")
    monkeypatch.setenv(LEASE_ENV, "60")  # held past its lease, it would come back by itself
    monkeypatch.setenv(PAIR_ENV, "5")
    prefix = os.environ[FETCH_ENV]
    client = redis.Redis.from_url(REDIS_URL)
    with prefork() as (app, _pool):
        _hold_behind_a_task_that_lasts(app, tmp_path)
        # held with b1 (one claim at a time would have left it in the queue), and kept: the
        # hold limit is 60 s here
        assert client.zcard(f"{prefix}q:celery:ready") == 0
        for command, queue in (("add_consumer", "elsewhere"), ("cancel_consumer", "celery")):
            replies = getattr(app.control, command)(queue, reply=True, timeout=5, limit=1)
            assert "ok" in next(iter(replies[0].values())), replies
        (tmp_path / "b0").touch()
        (tmp_path / "b1").touch()  # the child ends b1, reads that it fetches elsewhere now
        wait_until(
            lambda: client.zcard(f"{prefix}q:celery:ready") == 1, "b2 to be back in its queue"
        )
        assert client.zcard(f"{prefix}q:celery:leased") == 0
        assert not (tmp_path / "m2").exists()
        replies = app.control.add_consumer("celery", reply=True, timeout=5, limit=1) or []
        assert "ok" in next(iter(replies[0].values())), replies
        read_pid(tmp_path / "m2")
        wait_until(lambda: client.zcard(f"{prefix}q:celery:leased") == 0, "b2 to be acked")
    client.close()


def test_a_message_a_childs_claim_dead_letters_fails_its_task(
    fetch_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message whose lease ran out ``max_deliveries`` times is dead-lettered inside the claim
    that finds it; when that claim is a child's, the child tells the worker, which fails the
    task with ``WorkerLostError`` (nobody ran it: before, it stayed PENDING for ever)."""
    monkeypatch.setenv(LEASE_ENV, "0.3")
    monkeypatch.setenv(DELIVERIES_ENV, "1")
    app = make_app()
    try:
        doomed = app.tasks["p.add"].delay(2, 2)

        async def hold_and_die() -> None:  # a consumer that claims it and never settles it
            transport = app.create_transport()
            await transport.connect()
            try:
                assert len(await transport.get(["celery"], 1, 10.0)) == 1
            finally:
                await transport.close()

        asyncio.run(hold_and_die())
        with prefork() as (worker_app, pool):
            assert pool._board is not None  # the children fetch: the worker claims nothing
            with pytest.raises(WorkerLostError, match="dead-lettered by the broker"):
                doomed.get(timeout=15)
            assert worker_app.tasks["p.add"].delay(1, 2).get(timeout=15) == 3

        async def letters() -> list[Any]:
            transport = app.create_transport()
            await transport.connect()
            try:
                return await transport.dead_letters("celery")
            finally:
                await transport.close()

        [letter] = asyncio.run(letters())
        assert "max_deliveries=1" in letter.reason
    finally:
        app.close()


def children_fetch_from(pool: RecordingPool) -> tuple[str, ...]:
    """The queues the pool's children were last told to fetch from."""
    return pool._queues


def test_task_events_switched_on_at_run_time_come_from_the_worker(
    fetch_db: Path, tmp_path: Path
) -> None:
    """``enable_events`` on a worker whose children fetch: the worker fetches and sends the
    task events (the children fetch nothing meanwhile); ``disable_events``: the children fetch
    again, and nothing is lost across either switch."""
    from event_collector import Collector

    with prefork() as (app, pool):
        collector = Collector(app.create_transport())
        try:
            assert app.tasks["p.add"].delay(1, 1).get(timeout=10) == 2  # a child fetched it
            assert children_fetch_from(pool) == ("celery",)
            app.control.enable_events()  # a broadcast: heard by the worker a moment later
            wait_until(lambda: children_fetch_from(pool) == (), "the worker to fetch")
            sent = app.tasks["p.add"].delay(2, 2)
            assert sent.get(timeout=10) == 4
            collector.wait_for(
                "its task events",
                lambda es: (
                    {"task-received", "task-succeeded"}
                    <= {e["type"] for e in es if e.get("uuid") == sent.id}
                ),
            )
            app.control.disable_events()
            wait_until(lambda: children_fetch_from(pool) == ("celery",), "the children to fetch")
            later = [app.tasks["p.add"].delay(i, 1) for i in range(5)]
            assert [r.get(timeout=10) for r in later] == [i + 1 for i in range(5)]
        finally:
            collector.close()
