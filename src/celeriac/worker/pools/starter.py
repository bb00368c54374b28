"""How prefork children start: forked from a fork server that imported the app, or spawned.

``worker_pool_start_method`` (Celery's setting) chooses; by default ``forkserver`` on Linux and
``spawn`` elsewhere. Neither forks the worker itself, which holds sockets, threads and an event
loop that a child must not share.

* ``forkserver``: one fresh interpreter per worker (the fork server, from the standard library's
  :mod:`multiprocessing.forkserver`) imports the app once (:mod:`.preload`), then forks each
  child from that state. A child is ready in milliseconds instead of the ~150 ms an interpreter
  takes to start and import an app, which is what ``max_tasks_per_child``, a child killed at a
  hard time limit, ``terminate`` and autoscaling pay for every replacement; the children share
  the server's pages until they write them, and spent less CPU per task than spawned ones on
  the benchmark's drain (the changelog has the figures). As with Celery's fork, code the app
  module runs at import runs once, in the server: a connection or thread it opens then is not
  the child's (reopen such things in ``worker_process_init``, as Celery users do).
* ``spawn``: each child is a fresh interpreter that imports the app itself (the slow start, and
  the only method where ``fork`` does not exist). ``fork`` is read as ``forkserver``: the app
  preloaded, without forking the worker.

The fork server is the standard library's single one per process: the first prefork pool that
starts in a process starts it, with this pool's app to preload and the environment of the
moment, and the last one that stops stops it, so a pool started later (in tests, a worker run
in code) gets a server with its own app and environment, not a stale one. Each child also gets
the worker's environment as it is when the child starts (:class:`~.child.ChildConfig`), as a
spawned child would.

The ``celeriac worker`` command starts the server as a fork of itself (:func:`fork_ahead`),
once it has imported the app and the child's modules and before it opens a connection, a thread
or its event loop: the server then needs no interpreter and no imports of its own, the ~150 ms
of CPU that a spawned server spent importing again what the worker had just imported, beside it,
on the worker's start-up path (measured on the benchmark's worker, two cores: the first task
done 237-289 ms after the command's start, 11 runs, against 298-346 with a spawned server).
Where forking is not safe (a thread is already running, which an app may start at import; a
Python whose fork server this module does not know), it spawns the server instead
(:func:`warm`). The pool adopts that server when it starts with the same app; one it does not
adopt (another pool, ``spawn``, a failed start) is stopped (:func:`cool`). Forked or spawned,
the server is the standard library's: the pool asks it for children the same way.

The worker learns of its children's exits through the server. A server killed with SIGKILL (it
ignores SIGTERM: see :mod:`.preload`) therefore makes every child look lost at once: the worker
fails or requeues their tasks as for dead children (a child still running one then runs it to
its end, unaware), and the standard library starts a new server for the replacements, which
preloads nothing (they import the app themselves). Measured by hand: idle children then leave at
once (their pipe closes) and the worker goes on with new ones.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from celeriac.errors import ImproperlyConfigured

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext

#: The environment variable through which the fork server learns which app to preload.
PRELOAD_ENV = "CELERIAC_PREFORK_PRELOAD"
PRELOAD_MODULE = "celeriac.worker.pools.preload"
SETTING = "worker_pool_start_method"

_lock = threading.Lock()
_users = 0
_warm: str | None = None
"""The app a server started by :func:`warm` preloads, until a pool adopts it."""


def start_method(setting: str | None) -> str:
    """The method children start with for ``worker_pool_start_method`` = ``setting``; raises
    :class:`ImproperlyConfigured` naming the setting for a value that cannot work here."""
    if setting is None:
        return "forkserver" if sys.platform == "linux" else "spawn"
    # here: the worker command starts the server (warm) before it imports the app's machinery
    from celeriac.app.setting_types import START_METHODS, check_start_method

    check_start_method(SETTING, setting)
    method = START_METHODS[setting]
    if method not in multiprocessing.get_all_start_methods():
        raise ImproperlyConfigured(
            f"setting {SETTING!r}: {setting!r} is not available on {sys.platform}; use 'spawn'"
        )
    return method


def warm(app_spec: str) -> None:
    """Start the fork server now, preloading ``app_spec``, ahead of a pool that will
    :func:`acquire` it: the caller is about to import the app, which the server then imports
    at the same time. Does nothing where the default method is not ``forkserver``, or when a
    server is already in use. Paired with :func:`cool`, which stops it if no pool took it."""
    global _warm
    if start_method(None) != "forkserver":
        return
    with _lock:
        if _users == 0 and _warm is None:
            _start(app_spec)
            _warm = app_spec


def fork_ahead(app_spec: str, keep_out: Sequence[int] = ()) -> None:
    """Start the fork server now as a fork of this process, which has imported ``app_spec``
    and what a child runs, for a pool to :func:`acquire`; spawn it (:func:`warm`) where forking
    is not safe. ``keep_out`` are descriptors the server must not hold (the pipe a detaching
    command waits on: a server holding it would keep that command waiting). Does nothing where
    the default method is not ``forkserver``, or when a server is already in use. Paired with
    :func:`cool`, which stops it if no pool took it."""
    global _warm
    if start_method(None) != "forkserver":
        return
    if not _can_fork():
        warm(app_spec)
        return
    with _lock:
        if _users == 0 and _warm is None:
            _fork(keep_out)
            _warm = app_spec


def cool() -> None:
    """Stop a server :func:`warm` started that no pool adopted (the worker runs another pool,
    or ``spawn``, or it failed before its pool started). Blocks until the server is gone."""
    global _warm
    with _lock:
        if _warm is not None and _users == 0:
            _warm = None
            _stop()


def acquire(method: str, app_spec: str) -> SpawnContext | ForkServerContext:
    """The context a pool starts its children with; for ``forkserver``, the fork server is
    started now (the first pool of the process) with ``app_spec`` to preload, so it imports
    the app while the pool goes on starting, unless :func:`warm` started it with the same app.
    Every call is paired with :func:`release`."""
    global _users, _warm
    if method != "forkserver":
        cool()
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    with _lock:
        if _users == 0:
            if _warm != app_spec:
                if _warm is not None:
                    _stop()  # warmed with another app (a test's worker run in code)
                _start(app_spec)
            _warm = None
        _users += 1
    return context


def release(method: str) -> None:
    """The pool that acquired ``method`` no longer starts children (they have all exited): the
    last one stops the fork server. Blocks until the server is gone (call it off the loop)."""
    global _users
    if method != "forkserver":
        return
    with _lock:
        _users -= 1
        if _users == 0:
            _stop()


def _start(app_spec: str) -> None:
    """Start the standard library's fork server with ``app_spec`` to preload (under _lock)."""
    from multiprocessing import forkserver  # its server's machinery: only where it is used

    multiprocessing.get_context("forkserver").set_forkserver_preload([PRELOAD_MODULE])
    before = os.environ.get(PRELOAD_ENV)
    # the server is started with this environment (see .preload for the path)
    os.environ[PRELOAD_ENV] = json.dumps({"app": app_spec, "sys_path": sys.path})
    try:
        forkserver.ensure_running()
    finally:
        if before is None:
            del os.environ[PRELOAD_ENV]
        else:
            os.environ[PRELOAD_ENV] = before


def _can_fork() -> bool:
    """Whether this process can be the fork server's parent by fork: one thread (a fork copies
    only the caller, and a lock another thread held would stay held in every child), and a
    standard library whose fork server takes the arguments :func:`_fork` gives (3.14 added an
    authentication key to the server's protocol)."""
    from multiprocessing import forkserver

    return (
        _threads() == 1
        and sys.version_info < (3, 14)
        and isinstance(getattr(forkserver, "_forkserver", None), forkserver.ForkServer)
    )


def _threads() -> int:
    """This process's threads, native ones included where the kernel lists them (a library's
    thread pool started at import, such as a BLAS's, is not in :mod:`threading`'s count)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _fork(keep_out: Sequence[int]) -> None:
    """Fork the fork server from this process (under _lock): the same listening socket and
    "alive" pipe as the standard library's ``ensure_running`` makes, the same server loop
    (``forkserver.main``), but run by a fork instead of a fresh interpreter, then recorded
    where ``ensure_running`` looks for it, so that the pool's context uses it (and starts a
    spawned one again if it dies)."""
    import socket
    from multiprocessing import connection, forkserver, resource_tracker, util

    # the standard library's private parts that its own ensure_running uses (typeshed has none)
    connections: Any = connection
    server: Any = forkserver._forkserver
    resource_tracker.ensure_running()  # its descriptor goes to every child, as the stdlib does
    with socket.socket(socket.AF_UNIX) as listener:
        address = connections.arbitrary_address("AF_UNIX")
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()  # every client holds the write end; EOF ends the server
        for stream in (sys.stdout, sys.stderr):  # not written twice, by each child
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:
            _serve(listener.fileno(), alive_r, [alive_w, *keep_out])
        os.close(alive_r)
    with server._lock:
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid


def _serve(listener: int, alive_r: int, close: Sequence[int]) -> NoReturn:
    """The forked server's whole life: the standard library's loop, then leave without running
    what the worker registered to run at exit (its pid file, its log handlers' flush)."""
    global _lock
    code = 1
    try:
        _lock = threading.Lock()  # the worker held it at the fork
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        # see .preload: a signal sent to the worker's group must not end the server
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        from multiprocessing import forkserver

        forkserver.main(listener, alive_r, [])
    except SystemExit:  # how the standard library's loop ends once every client is gone
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _stop() -> None:
    """Stop the fork server (under _lock)."""
    from multiprocessing import forkserver

    # The standard library has no public way to stop its fork server (it stops when the
    # process exits); without this one the server keeps its app and environment for ever.
    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if callable(stop):
        stop()
