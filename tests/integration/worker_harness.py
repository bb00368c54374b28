"""Real worker processes for integration tests: start, watch, signal and always stop them.

A :class:`Harness` belongs to one test (see the ``harness`` fixture of each test module): it owns
a SQLite file in the test's tmp dir used as broker and result backend, the test-side app built
from :mod:`apps.sqlite_tasks`, and every worker process the test starts. ``close()`` stops every
one still running (SIGTERM, then SIGKILL as a last resort) and closes the app, so a failing test
leaves no process behind.

Each worker's stdout and stderr are read line by line by background threads; waiting for a line
(``"... ready: ..."``, a shutdown message) blocks on a condition variable with a deadline, never
on a fixed sleep.
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
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from apps.sqlite_tasks import DB_ENV, LEASE_ENV, build_app

from celeriac import Celeriac
from celeriac.transports.base import DeadLetter, Transport

try:  # every line a worker prints is scanned for the suite's secrets at the session's end
    from _secrets_scan import record_output
except ImportError:  # imported outside the suite (tests/chaos scripts): nothing scans

    def record_output(source: str, line: str) -> None:
        pass


T = TypeVar("T")

INTEGRATION_DIR = Path(__file__).resolve().parent
APP_SPEC = "apps.sqlite_tasks"
READY = re.compile(r"\S+ ready: pool=")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0


def child_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker a test starts: no inherited ``CELERIAC_*`` settings, the test
    apps (``apps.*``) importable, unbuffered output, and the test's own ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(INTEGRATION_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def wait_for_runs(
    condition: str,
    read: Callable[[], list[str]],
    check: Callable[[list[str]], bool],
    timeout: float,
    workers: Sequence[WorkerProcess],
) -> None:
    """Poll the runs a test's tasks record (``read``) until ``check`` holds; past ``timeout``
    fail with every worker's output. The runs live in a file the workers append to, which
    offers no event to wait on, hence the short polls."""
    deadline = time.monotonic() + timeout
    while not check(read()):
        if time.monotonic() > deadline:
            outputs = "\n".join(w.output() for w in workers)
            raise AssertionError(f"timed out waiting for {condition}\n{outputs}")
        time.sleep(0.02)


class WorkerProcess:
    """One ``python -m celeriac ... worker`` child, with its output collected as it comes."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.args = list(args)
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            self.args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._source = f"worker process {self.proc.pid}"
        self._cond = threading.Condition()
        self._open_streams = 2
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines)),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        try:
            for raw in stream:
                line = raw.rstrip("\n")
                record_output(self._source, line)
                with self._cond:
                    into.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._open_streams -= 1
                self._cond.notify_all()

    # -- looking at it ------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.stderr_lines)

    def output(self) -> str:
        """Everything it printed so far, for assertion messages."""
        with self._cond:
            return "\n".join(
                [f"$ {' '.join(self.args)}", "--- stderr:", *self.stderr_lines]
                + (["--- stdout:", *self.stdout_lines] if self.stdout_lines else [])
            )

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> str:
        """The first stderr line matching ``pattern`` (searched anywhere in the line).

        Fails at once if the process ends without printing it, else after ``timeout`` seconds.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.stderr_lines:
                    if regex.search(line):
                        return line
                if self._open_streams == 0:
                    raise AssertionError(
                        f"worker ended (status {self.proc.wait()}) without printing "
                        f"{regex.pattern!r}\n{self._unlocked_output()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no line matching {regex.pattern!r} within {timeout}s\n"
                        f"{self._unlocked_output()}"
                    )
                self._cond.wait(remaining)

    def _unlocked_output(self) -> str:
        return "\n".join([f"$ {' '.join(self.args)}", *self.stderr_lines, *self.stdout_lines])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        return self.wait_for_line(READY, timeout)

    # -- stopping it --------------------------------------------------------------------------
    def send(self, signum: int) -> None:
        if self.running:
            self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end; fails (leaving it to :meth:`stop`) after ``timeout``."""
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout}s\n{self.output()}"
            ) from None
        for reader in self._readers:
            reader.join(timeout=5)
        return status

    def stop(self) -> int:
        """Make sure it is gone: SIGTERM (warm), then SIGKILL if it does not leave in time."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=KILL_TIMEOUT)
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


class Harness:
    """One test's broker file, test-side app, and worker processes."""

    def __init__(self, tmp_path: Path, lease_seconds: float = 60.0) -> None:
        self.dir = tmp_path
        self.db = tmp_path / "broker.db"
        self.lease_seconds = lease_seconds
        self.workers: list[WorkerProcess] = []
        self._app: Celeriac | None = None

    @property
    def app(self) -> Celeriac:
        """The test process's app on the same broker and backend as the workers."""
        if self._app is None:
            self._app = build_app(self.db, self.lease_seconds)
        return self._app

    def env(self, db: Path | str | None = None, **extra: str) -> dict[str, str]:
        """The environment of a child (see :func:`child_env`), the broker file given."""
        db_path = str(db if db is not None else self.db)
        return child_env({DB_ENV: db_path, LEASE_ENV: str(self.lease_seconds), **extra})

    def celeriac_args(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "celeriac", *args]

    def start_worker(
        self,
        *extra: str,
        concurrency: int = 2,
        pool: str | None = "threads",
        name: str | None = None,
        loglevel: str = "info",
        ready: bool = True,
        db: Path | str | None = None,
        env: dict[str, str] | None = None,
        app_spec: str = APP_SPEC,
    ) -> WorkerProcess:
        """Start a worker on this harness's broker; by default wait until it is consuming."""
        args = ["-A", app_spec, "worker", "-c", str(concurrency), "-l", loglevel]
        if pool is not None:  # None: the app's worker_pool
            args += ["-P", pool]
        if name is not None:
            args += ["-n", name]
        worker = WorkerProcess(
            self.celeriac_args(*args, *extra), {**self.env(db), **(env or {})}, self.dir
        )
        self.workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def run_cli(
        self, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m celeriac ARGS`` to completion (killed if it outlives ``timeout``)."""
        return subprocess.run(
            self.celeriac_args(*args),
            env={**self.env(), **(env or {})},
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- the broker, seen from the test -------------------------------------------------------
    def with_transport(self, use: Callable[[Transport], Coroutine[Any, Any, T]]) -> T:
        """Run ``use(transport)`` on a fresh, connected transport of the app, then close it."""
        return on_transport(self.app, use)

    def queue_size(self, queue: str = "celery") -> int:
        """Messages waiting in ``queue`` (due or delayed; not those leased to a live worker)."""
        return queue_size(self.app, queue)

    def dead_letters(self, queue: str = "celery") -> list[DeadLetter]:
        return dead_letters(self.app, queue)

    def close(self) -> None:
        """Stop every worker still running, then close the app's connections."""
        try:
            for worker in self.workers:  # all at once: their warm shutdowns overlap
                worker.send(signal.SIGTERM)
            for worker in self.workers:
                worker.stop()
        finally:
            if self._app is not None:
                self._app.close()


def start_cli_worker(
    app_spec: str,
    env: dict[str, str],
    cwd: Path,
    *extra: str,
    pool: str = "threads",
    concurrency: int = 2,
) -> WorkerProcess:
    """``python -m celeriac -A app_spec worker -P pool -c concurrency -l info *extra``, started
    and waited for until it is consuming; the caller stops it."""
    args = [sys.executable, "-m", "celeriac", "-A", app_spec, "worker"]
    args += ["-P", pool, "-c", str(concurrency), "-l", "info", *extra]
    worker = WorkerProcess(args, env, cwd)
    try:
        worker.wait_ready()
    except BaseException:
        worker.stop()
        raise
    return worker


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def files(directory: Path, prefix: str = "run-") -> list[Path]:
    """The files in ``directory`` whose names start with ``prefix`` (one per task run)."""
    return sorted(p for p in directory.iterdir() if p.name.startswith(prefix))


def on_transport(app: Celeriac, use: Callable[[Transport], Coroutine[Any, Any, T]]) -> T:
    """Run ``use(transport)`` on a fresh, connected transport of ``app`` (on a loop of its
    own, so a test may call it from anywhere), then close it."""

    async def run() -> T:
        transport = app.create_transport()
        await transport.connect()
        try:
            return await use(transport)
        finally:
            await transport.close()

    return asyncio.run(run())


def queue_size(app: Celeriac, queue: str = "celery") -> int:
    """Messages waiting in ``queue`` (due or delayed; not those leased to a live worker)."""

    async def size(transport: Transport) -> int:
        return await transport.size(queue)

    return on_transport(app, size)


def dead_letters(app: Celeriac, queue: str = "celery") -> list[DeadLetter]:
    """The dead letters of ``queue``, newest first."""

    async def letters(transport: Transport) -> list[DeadLetter]:
        return await transport.dead_letters(queue)

    return on_transport(app, letters)


def fork_servers(pid: int) -> list[int]:
    """The fork servers among the children of the worker process ``pid`` (Linux /proc): a
    spawned one runs ``multiprocessing.forkserver``; the one the worker command forks from
    itself has the worker's own command line."""
    return [c for c in _proc_children(pid) if _is_fork_server(c, pid)]


def _is_fork_server(child: int, worker: int) -> bool:
    line = cmdline(child)
    return b"multiprocessing.forkserver" in line or (bool(line) and line == cmdline(worker))


def _proc_children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    except OSError:  # gone
        pass
    return found


def cmdline(pid: int) -> bytes:
    """The command line of process ``pid`` (NUL-separated), empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def pool_children(pid: int) -> list[int]:
    """The prefork children of the worker process ``pid`` (Linux /proc): those its fork server
    forked (the default: the server is the worker's child, the children are its own) or those
    the worker spawned; not the fork server itself, nor multiprocessing's resource tracker."""
    found: list[int] = []
    for child in _proc_children(pid):
        line = cmdline(child)
        if _is_fork_server(child, pid):
            found += _proc_children(child)
        elif b"resource_tracker" not in line and line:
            found.append(child)
    return sorted(found)
