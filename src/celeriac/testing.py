"""Helpers for testing code that uses celeriac with real workers instead of eager mode.

An in-memory app and a worker in a thread, a worker in a process of its own, and a recorder of
the task messages a test sends (the pytest plugin, :mod:`celeriac.contrib.pytest`, wraps each
in a fixture; they work without pytest too):

>>> app = memory_app("shop")
>>> with worker_thread(app):
...     assert add.delay(2, 3).get(timeout=5) == 5
>>> with SentTasks() as sent:
...     add.delay(2, 2)
>>> assert sent.called_with("shop.add", args=(2, 2))
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson

from celeriac import signals
from celeriac.app import Celeriac
from celeriac.errors import CeleriacError
from celeriac.worker.worker import Worker, find_app_spec


def memory_app(main: str = "test", **settings: Any) -> Celeriac:
    """An app on a fresh in-memory broker and result backend of its own."""
    url = f"memory://{uuid.uuid4().hex}"
    return Celeriac(main, broker=url, backend=url, **settings)


@contextmanager
def worker_thread(app: Celeriac, timeout: float = 10.0, **options: Any) -> Iterator[Worker]:
    """Run a real worker for ``app`` in a background thread; stop it (warm) on exit.

    ``options`` are :class:`~celeriac.worker.worker.Worker`'s keyword arguments
    (``concurrency``, ``pool``, ``queues``, ``prefetch_multiplier``...).
    """
    options.setdefault("concurrency", 2)
    options.setdefault("pool", "threads")  # an in-memory app lives in this one process
    worker = Worker(app, **options)
    status: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            status.append(asyncio.run(worker.run_async()))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="celeriac-test-worker", daemon=True)
    thread.start()
    try:
        while not worker.ready.wait(0.05):
            if not thread.is_alive():
                raise CeleriacError(f"worker did not start: {errors or status}")
            timeout -= 0.05
            if timeout <= 0:
                raise CeleriacError("worker did not become ready in time")
        yield worker
    finally:
        worker.stop()
        thread.join(30)
    if errors:
        raise errors[0]


# -- a worker in a process of its own -----------------------------------------------------------

#: The line a worker logs (at INFO) once it consumes.
_READY = re.compile(r"\S+ ready: pool=")

OutputObserver = Callable[["WorkerProcess", str], None]
"""Called with the process and each line it prints, on the thread that reads its output."""

_observers: list[OutputObserver] = []


def observe_output(observer: OutputObserver) -> Callable[[], None]:
    """Have ``observer`` see every line that every :class:`WorkerProcess` prints from now on
    (a test suite's plugin that scans worker output for leaked secrets, or keeps it); returns
    the function that stops it. The observer runs on the reader thread: it must be quick and
    must not raise (an exception is dropped, so the output is still read)."""
    _observers.append(observer)

    def stop() -> None:
        with suppress(ValueError):
            _observers.remove(observer)

    return stop


class WorkerProcess:
    """A ``celeriac worker`` child process, with its output (stdout and stderr, merged) read as
    it comes by a thread, so that waiting for a line is a wait on a condition, not a poll."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], cwd: str) -> None:
        self.args = list(args)
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            self.args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._open = True
        self._reader = threading.Thread(target=self._read, name="celeriac-test-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        try:
            for raw in stream or ():
                line = raw.rstrip("\n")
                for observer in tuple(_observers):
                    with suppress(Exception):
                        observer(self, line)
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._open = False
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """The command and everything it printed so far (for assertion messages)."""
        with self._cond:
            return "\n".join([f"$ {' '.join(self.args)}", *self.lines])

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float) -> str:
        """The first output line matching ``pattern``; fails at once if the process ends
        without printing it, else after ``timeout`` seconds, with its output."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if not self._open or left <= 0:
                    break
                self._cond.wait(left)
        ended = "ended" if not self._open else f"printed no such line within {timeout}s"
        raise CeleriacError(f"worker process {ended} ({regex.pattern!r})\n{self.output()}")

    def stop(self, timeout: float = 15.0) -> int:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not leave within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


@contextmanager
def worker_process(
    app: Celeriac,
    *,
    app_spec: str | None = None,
    pool: str = "threads",
    concurrency: int = 2,
    queues: Sequence[str] | None = None,
    hostname: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[WorkerProcess]:
    """Run ``celeriac worker`` for ``app`` in a child process until the block ends.

    The child imports the app by name (``app_spec``, ``module:attr``; found when ``app`` is a
    module-level object of an importable module) on this process's ``sys.path``, and is given
    this app's broker and backend URLs and transport options (``CELERIAC_BROKER_URL``,
    ``CELERIAC_RESULT_BACKEND``, ``CELERIAC_BROKER_TRANSPORT_OPTIONS``...), so both ends meet
    even when the test changed them after import; other settings are what the module sets.
    The broker must reach across processes (SQLite, Redis, RabbitMQ): the in-memory one
    cannot. Returns once the worker consumes; stops it warm on exit.
    """
    if app.broker_url.startswith("memory:"):
        raise CeleriacError(
            f"a worker process cannot reach the in-memory broker {app.broker_url!r}: give the "
            "app a broker other processes can reach (broker_url='sqlite:///path/to/broker.db')"
        )
    spec = app_spec or find_app_spec(app)
    if spec is None:
        raise CeleriacError(
            f"a worker process imports its app by name, and {app!r} is not a module-level "
            "name of an importable module: define it in a module, or pass app_spec='module:attr'"
        )
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env["CELERIAC_BROKER_URL"] = app.broker_url
    child_env["CELERIAC_RESULT_BACKEND"] = app.result_backend_url or "disabled"
    for name in ("broker_transport_options", "result_backend_transport_options"):
        options = getattr(app.conf, name)
        if options:  # a key prefix, a layout: the child must use the same keys
            try:
                child_env[f"CELERIAC_{name.upper()}"] = orjson.dumps(options).decode()
            except TypeError as exc:
                raise CeleriacError(
                    f"{name} cannot be given to a worker process (not JSON: {exc}): "
                    "set them in the app's module instead"
                ) from None
    command = [sys.executable, "-m", "celeriac", "-A", spec, "worker", "-l", "info"]
    command += ["-P", pool, "-c", str(concurrency)]
    command += ["-n", hostname or f"test-{uuid.uuid4().hex[:8]}@%h"]
    if queues:
        command += ["-Q", ",".join(queues)]
    command += list(args)
    process = WorkerProcess(command, child_env, os.getcwd())
    try:
        process.wait_for(_READY, timeout)
        yield process
    finally:
        process.stop()


# -- what a test sent ---------------------------------------------------------------------------

#: What :meth:`SentTask.matches` compares besides the name and arguments: fields of the record,
#: the rest read from the message's headers and properties.
_FIELDS = ("id", "exchange", "routing_key")
_HEADERS = ("eta", "expires", "retries", "parent_id", "root_id", "group", "shadow")
_PROPERTIES = ("priority", "reply_to")


@dataclass(frozen=True)
class SentTask:
    """One task message published by this process: its name, arguments and envelope."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    id: str
    exchange: str
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> Any:
        """A send option as the message carries it (``eta``, ``priority``, ``routing_key``...)."""
        if name in _FIELDS:
            return getattr(self, name)
        if name in _HEADERS:
            return self.headers.get(name)
        if name in _PROPERTIES:
            return self.properties.get(name)
        known = ", ".join((*_FIELDS, *_HEADERS, *_PROPERTIES))
        raise TypeError(f"no send option {name!r} to compare (known: {known})")

    def matches(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> bool:
        """Same task name and, for what is given, the same arguments and options."""
        if name != self.name:
            return False
        if args is not None and tuple(args) != self.args:
            return False
        if kwargs is not None and dict(kwargs) != self.kwargs:
            return False
        return all(self.option(key) == value for key, value in options.items())

    def __str__(self) -> str:
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(shown)})"


def _task_name(task: Any) -> str:
    """A task given by name or as the task object."""
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"a task name or a task, not {task!r}")
    return name


class SentTasks:
    """Records the task messages this process publishes while it is open, from any thread and
    any app (a task sending another on a worker thread counts), through Celery's
    ``before_task_publish`` signal. Sends run eagerly (``task_always_eager``) publish nothing,
    so they are not recorded.

    >>> with SentTasks() as sent:
    ...     add.delay(2, 2)
    >>> assert sent.called_with("proj.add", args=(2, 2))
    >>> assert sent.count(add) == 1
    """

    def __init__(self) -> None:
        self._sent: list[SentTask] = []
        self._lock = threading.Lock()
        self._uid = f"celeriac.testing.SentTasks:{id(self)}"

    def start(self) -> SentTasks:
        signals.before_task_publish.connect(self._record, weak=False, dispatch_uid=self._uid)
        return self

    def stop(self) -> None:
        signals.before_task_publish.disconnect(dispatch_uid=self._uid)

    def __enter__(self) -> SentTasks:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(
        self,
        sender: str,
        body: tuple[Any, ...],
        headers: Mapping[str, Any],
        exchange: str,
        routing_key: str,
        properties: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        args, kwargs = body[0], body[1]
        sent = SentTask(
            name=str(sender),
            args=tuple(args),
            kwargs=dict(kwargs),
            id=str(headers.get("id")),
            exchange=exchange,
            routing_key=routing_key,
            headers=dict(headers),
            properties=dict(properties or {}),
        )
        with self._lock:
            self._sent.append(sent)

    # -- reading ------------------------------------------------------------------------------
    @property
    def all(self) -> list[SentTask]:
        """Every recorded send, oldest first."""
        with self._lock:
            return list(self._sent)

    @property
    def names(self) -> list[str]:
        return [sent.name for sent in self.all]

    def filter(
        self,
        task: Any = None,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> list[SentTask]:
        """The sends of ``task`` (a name or a task; any task when None) with these arguments
        and options (``eta``, ``priority``, ``routing_key``... compared as the message has them)."""
        found = self.all
        if task is not None:
            name = _task_name(task)
            found = [s for s in found if s.matches(name, args, kwargs, **options)]
        else:
            found = [s for s in found if s.matches(s.name, args, kwargs, **options)]
        return found

    def called_with(
        self,
        task: Any,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> bool:
        """Whether ``task`` was sent with these arguments (those not given match anything)."""
        return bool(self.filter(task, args=args, kwargs=kwargs, **options))

    def count(
        self,
        task: Any = None,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> int:
        """How many sends match (every send when nothing is given)."""
        return len(self.filter(task, args=args, kwargs=kwargs, **options))

    def clear(self) -> None:
        """Forget what was recorded so far (keep recording)."""
        with self._lock:
            self._sent.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sent)

    def __iter__(self) -> Iterator[SentTask]:
        return iter(self.all)

    def __getitem__(self, index: int) -> SentTask:
        with self._lock:
            return self._sent[index]

    def __repr__(self) -> str:
        sent = self.all
        return f"<SentTasks: {', '.join(map(str, sent)) if sent else 'nothing sent'}>"
