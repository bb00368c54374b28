"""``worker_pool_start_method``: how prefork children start (see celeriac.worker.pools.starter)."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from celeriac import Celeriac, ImproperlyConfigured
from celeriac.worker.pools import starter
from celeriac.worker.pools.starter import start_method


def test_the_default_is_the_fork_server_on_linux_and_spawn_elsewhere() -> None:
    assert start_method(None) == ("forkserver" if sys.platform == "linux" else "spawn")


@pytest.mark.parametrize(
    ("value", "method"), [("forkserver", "forkserver"), ("fork", "forkserver"), ("spawn", "spawn")]
)
def test_celerys_values_are_read(value: str, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} does not exist on {sys.platform}")
    assert start_method(value) == method
    app = Celeriac("t", broker="memory://", worker_pool_start_method=value)
    try:
        assert app.conf.worker_pool_start_method == value
    finally:
        app.close()


def test_an_unknown_method_fails_naming_the_setting() -> None:
    message = r"setting 'worker_pool_start_method': 'threads' is not one of 'forkserver', 'fork'"
    with pytest.raises(ImproperlyConfigured, match=message):
        Celeriac("t", broker="memory://", worker_pool_start_method="threads")
    with pytest.raises(ImproperlyConfigured, match=message):
        start_method("threads")


# -- the fork server started ahead (starter.warm), real processes --------------------------------

SPEC = "apps.sqlite_tasks"
needs_forkserver = pytest.mark.skipif(
    start_method(None) != "forkserver", reason="the fork server is the default on Linux only"
)


def _server() -> int | None:
    """The pid of this process's fork server (the standard library keeps one per process)."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    return pid if isinstance(pid, int) and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@needs_forkserver
def test_a_fork_server_started_ahead_is_the_one_the_pool_takes() -> None:
    assert _server() is None
    starter.warm(SPEC)
    warmed = _server()
    assert warmed is not None
    try:
        starter.acquire("forkserver", SPEC)
        try:
            assert _server() == warmed
            starter.cool()  # the pool holds it: nothing to stop
            assert _server() == warmed
        finally:
            starter.release("forkserver")
    finally:
        starter.cool()
    assert _server() is None and not _alive(warmed)  # the last release stopped it


@needs_forkserver
def test_a_fork_server_started_ahead_for_another_app_is_replaced() -> None:
    starter.warm("apps.other")
    warmed = _server()
    assert warmed is not None
    try:
        starter.acquire("forkserver", SPEC)
        try:
            assert not _alive(warmed)
            assert _server() not in (None, warmed)
        finally:
            starter.release("forkserver")
    finally:
        starter.cool()
    assert _server() is None


@needs_forkserver
@pytest.mark.parametrize("then", ["cool", "spawn"])
def test_a_fork_server_no_pool_takes_is_stopped(then: str) -> None:
    """The worker runs another pool (cool), or its app asks for spawned children."""
    starter.warm(SPEC)
    warmed = _server()
    assert warmed is not None
    if then == "cool":
        starter.cool()
    else:
        context = starter.acquire("spawn", SPEC)
        assert context.get_start_method() == "spawn"
        starter.release("spawn")
    assert _server() is None and not _alive(warmed)


@needs_forkserver
def test_warm_leaves_a_server_a_pool_holds_alone() -> None:
    starter.acquire("forkserver", SPEC)
    try:
        held = _server()
        starter.warm("apps.other")
        assert _server() == held
    finally:
        starter.release("forkserver")
    starter.cool()
    assert _server() is None


# -- the fork server forked from the worker (starter.fork_ahead), in a process of its own -------

FORK_AHEAD = """
import json, os, select, sys, threading, time
from multiprocessing import forkserver
from celeriac.worker.pools import starter

if sys.argv[1] == "thread":  # as an app that starts a thread when it is imported
    threading.Thread(target=threading.Event().wait, daemon=True).start()
held_r, held_w = os.pipe()  # what the server must not hold (a detaching command's pipe)
starter.fork_ahead("apps.sqlite_tasks", keep_out=[held_w])
os.close(held_w)
server = forkserver._forkserver._forkserver_pid
deadline = time.monotonic() + 10
line = b""
while not line and time.monotonic() < deadline:  # empty for a moment while a spawn execs
    with open(f"/proc/{server}/cmdline", "rb") as fh:
        line = fh.read()
    time.sleep(0.005)
with open("/proc/self/cmdline", "rb") as fh:
    forked = line == fh.read()
spawned = not forked and b"forkserver import main" in line  # the standard library's server
released = bool(select.select([held_r], [], [], 10)[0]) and os.read(held_r, 1) == b""
context = starter.acquire("forkserver", "apps.sqlite_tasks")
child = context.Process(target=sys.exit, args=(7,))  # not os._exit: coverage replaces it
child.start()
child.join(10)
starter.release("forkserver")
gone = not os.path.exists(f"/proc/{server}")
print(json.dumps({"forked": forked, "spawned": spawned,
                  "released": released, "exitcode": child.exitcode, "gone": gone}))
"""


def _fork_ahead(mode: str) -> dict[str, object]:
    import json
    import subprocess

    path = os.pathsep.join(entry for entry in sys.path if entry)
    done = subprocess.run(
        [sys.executable, "-c", FORK_AHEAD, mode],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@needs_forkserver
def test_a_fork_server_forked_ahead_serves_children_holds_nothing_kept_out_and_stops() -> None:
    """One thread: the server is a fork of this process (its command line is ours: no
    interpreter, no imports of its own), it does not hold the descriptor it was told to keep
    out (the reader sees EOF once this process closes it), its child runs, and it leaves with
    the last pool."""
    assert _fork_ahead("alone") == {
        "forked": True,
        "spawned": False,
        "released": True,
        "exitcode": 7,
        "gone": True,
    }


@needs_forkserver
def test_a_process_running_a_thread_spawns_its_fork_server_instead() -> None:
    """Forking a process that runs a thread is not safe (a lock the thread held stays held in
    the fork): the server is spawned, as :func:`starter.warm` does, and serves the same."""
    assert _fork_ahead("thread") == {
        "forked": False,
        "spawned": True,
        "released": True,
        "exitcode": 7,
        "gone": True,
    }
