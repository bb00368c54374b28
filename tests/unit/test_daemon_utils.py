"""Pid files, process liveness, umask and identity: the pieces of running as a daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celeriac.errors import CeleriacError
from celeriac.utils.daemon import (
    Pidfile,
    PidfileLocked,
    drop_privileges,
    parse_umask,
    process_alive,
)


def exited_pid() -> int:
    """The pid of a process that has exited and been reaped (nobody holds it now)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_a_live_pid_locks_the_file_and_release_removes_only_ours(tmp_path: Path) -> None:
    path = tmp_path / "w1.pid"
    pidfile = Pidfile(path)
    pidfile.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    pidfile.acquire()  # our own pid (a worker re-executed by --reload): not a conflict
    path.write_text(f"{os.getppid()}\n")  # a live process that is not us
    with pytest.raises(PidfileLocked, match=rf"names a running process \(pid {os.getppid()}\)"):
        Pidfile(path).acquire()
    pidfile.release()  # it names someone else now: left alone
    assert path.exists()
    path.write_text(f"{os.getpid()}\n")
    pidfile.release()
    assert not path.exists()


@pytest.mark.parametrize("content", ["{dead}\n", "not a pid\n", ""])
def test_a_stale_or_broken_pid_file_is_replaced(tmp_path: Path, content: str) -> None:
    path = tmp_path / "w1.pid"
    path.write_text(content.format(dead=exited_pid()))
    Pidfile(path).acquire()
    assert path.read_text() == f"{os.getpid()}\n"


def test_a_zombie_is_not_alive() -> None:
    pid = os.fork()
    if pid == 0:  # the child leaves at once; the parent does not reap it yet
        os._exit(0)
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, still unreaped
        assert not process_alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert process_alive(os.getpid())
    assert not process_alive(exited_pid())
    assert not process_alive(0)


def test_umask_is_read_as_celery_reads_it() -> None:
    assert parse_umask("022") == 0o22
    assert parse_umask("0o27") == 0o27
    assert parse_umask("18") == 18  # no leading zero: decimal
    with pytest.raises(ValueError):
        parse_umask("0999")
    with pytest.raises(ValueError):
        parse_umask("1000")


def test_identity_changes_need_a_real_user_and_group() -> None:
    drop_privileges(None, None)
    drop_privileges(str(os.getuid()), str(os.getgid()))  # the identity held: nothing to do
    with pytest.raises(CeleriacError, match="--uid: no such user 'no-such-user-x'"):
        drop_privileges("no-such-user-x", None)
    with pytest.raises(CeleriacError, match="--gid: no such group 'no-such-group-x'"):
        drop_privileges(None, "no-such-group-x")


def test_only_root_may_change_identity() -> None:
    """As an unprivileged user, asking for another identity is refused naming the reason.
    (Run as root, the check happens in a forked child that first becomes 'nobody'.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what drop_privileges said, then leave without cleanup
        status = 1
        try:
            if os.geteuid() == 0:
                import pwd

                nobody = pwd.getpwnam("nobody")
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            try:
                drop_privileges("0", None)
            except CeleriacError as exc:
                os.write(write_end, str(exc).encode())
                status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said
    assert "--uid/--gid need root to change identity" in said
