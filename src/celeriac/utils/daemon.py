"""Running as a daemon: pid files, ``--detach``, ``--uid``/``--gid``, ``--umask``.

**Pid files.** :class:`Pidfile` refuses to start a second worker whose pid file names a live
process (an init script or ``celeriac multi`` would otherwise start the same node twice), removes
a stale one (its process is gone, or it holds no pid), writes the new one atomically
(``O_CREAT | O_EXCL``, so two workers racing for it cannot both win) and removes it at exit only
if it still names this process.

**Detaching** (:func:`detach`) is Celery's double fork: the command forks, the child starts a new
session (no controlling terminal), forks again and exits, and the grandchild moves to the working
directory, sets the umask, points stdin at ``/dev/null`` and stdout/stderr at the log file (or
``/dev/null``), and execs the same command again, which then runs the worker. Unlike Celery's,
the command that detached does not return at once: it waits on a pipe until the worker is
consuming (exit 0) or has failed at start-up (exit 1, with the worker's error lines copied to
its terminal), so ``celeriac worker --detach`` with a typo in a setting says so, and a systemd
``Type=forking`` unit is "started" when the worker really is, with its pid file written.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import select
import sys
import time
from collections.abc import Mapping, Sequence

from celeriac.errors import CeleriacError

__all__ = [
    "DETACHED_ENV",
    "Notifier",
    "Pidfile",
    "PidfileLocked",
    "detach",
    "drop_privileges",
    "parse_umask",
    "process_alive",
]

#: Set in the environment of the process a detach execs, so that it runs instead of detaching
#: again. Not ``CELERIAC_``-prefixed: those are settings.
DETACHED_ENV = "_CELERIAC_DETACHED"
#: The file descriptor of the pipe the detached worker reports on (see :class:`Notifier`).
NOTIFY_FD_ENV = "_CELERIAC_NOTIFY_FD"
#: What the detached worker writes once it consumes: the waiting command exits 0 on it.
READY_MARK = b"\x00celeriac-ready\n"
#: How long the detaching command waits for the worker to be ready before it leaves it be.
READY_TIMEOUT = 120.0


class PidfileLocked(CeleriacError):
    """The pid file names a live process: this node is already running."""


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not yet reaped, is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True  # no /proc (macOS): the kill above is all we know
    # "pid (comm) S ...": the state follows the last ')' (comm may hold spaces and parens)
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


class Pidfile:
    """One pid file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))

    def __repr__(self) -> str:
        return f"Pidfile({self.path!r})"

    def read_pid(self) -> int | None:
        """The pid the file names; ``None`` if there is no file or it holds no pid."""
        try:
            with open(self.path, encoding="ascii", errors="replace") as fh:
                text = fh.read(64).strip()
        except FileNotFoundError:
            return None
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            return None

    def acquire(self) -> None:
        """Write this process's pid, unless a live process holds the file (PidfileLocked)."""
        for _ in range(3):
            pid = self.read_pid()
            if pid is not None and pid != os.getpid() and process_alive(pid):
                raise PidfileLocked(
                    f"pid file {self.path} names a running process (pid {pid}): is this node "
                    "already running? Stop it first, or use another --pidfile"
                )
            if os.path.lexists(self.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # stale: its process is gone, or it is not a pid file
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue  # another process wrote it between our unlink and open: look again
            except OSError as exc:
                raise CeleriacError(f"cannot write the pid file {self.path}: {exc}") from None
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        raise PidfileLocked(f"pid file {self.path} keeps being written by another process")

    def release(self) -> None:
        """Remove the file if it still names this process."""
        if self.read_pid() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def parse_umask(text: str) -> int:
    """Celery's rule: octal with a leading zero (``0o22``, ``022``), else decimal."""
    text = text.strip()
    value = int(text, 8 if text.startswith("0") else 10)
    if not 0 <= value <= 0o777:
        raise ValueError(f"umask {text!r} is not between 0 and 0777")
    return value


def _user(uid: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(uid)
    except KeyError:
        raise CeleriacError(f"--uid: no such user {uid!r}") from None


def _group_id(gid: str) -> int:
    try:
        return int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid
    except KeyError:
        raise CeleriacError(f"--gid: no such group {gid!r}") from None


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """Become ``uid``/``gid`` (names or numbers): group first, with the user's supplementary
    groups, then user. Only root can; asking for the identity already held is a no-op."""
    if uid is None and gid is None:
        return
    user = _user(uid) if uid else None
    group_id = _group_id(gid) if gid else (user.pw_gid if user is not None else os.getgid())
    user_id = user.pw_uid if user is not None else os.getuid()
    if (user_id, group_id) == (os.getuid(), os.getgid()):
        return
    if os.geteuid() != 0:
        raise CeleriacError(
            f"--uid/--gid need root to change identity (this runs as uid {os.geteuid()}); "
            "start it as the user it should run as instead"
        )
    os.setgid(group_id)
    if user is not None:
        os.initgroups(user.pw_name, group_id)
        os.setuid(user.pw_uid)
        os.environ["HOME"] = user.pw_dir


def detach(
    argv: Sequence[str],
    *,
    executable: str,
    workdir: str | None = None,
    umask: int | None = None,
    logfile: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> int:
    """Exec ``executable argv`` as a daemon (see the module docstring); returns, in the calling
    process only, its exit status: 0 once the daemon consumes, 1 if it failed at start-up."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(write_end)
        os.waitpid(first, 0)  # it exits as soon as it has forked the daemon
        return _relay(read_end, ready_timeout, logfile)
    try:  # the first child: leave the terminal's session, fork the daemon, exit
        os.close(read_end)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        _become_daemon(argv, executable, workdir, umask, logfile, env, write_end)
    finally:
        os._exit(1)  # only reached if exec failed (it reported why on the pipe)


def _become_daemon(
    argv: Sequence[str],
    executable: str,
    workdir: str | None,
    umask: int | None,
    logfile: str | None,
    env: Mapping[str, str] | None,
    notify: int,
) -> None:
    try:
        if workdir is not None:
            os.chdir(workdir)
        if umask is not None:
            os.umask(umask)
        null = os.open(os.devnull, os.O_RDWR)
        out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if logfile else null
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.set_inheritable(notify, True)
        environ = dict(os.environ if env is None else env)
        environ[DETACHED_ENV] = "1"
        environ[NOTIFY_FD_ENV] = str(notify)
        os.execve(executable, [executable, *argv], environ)  # noqa: S606 - our own command
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.write(notify, f"Error: cannot start the detached worker: {exc}\n".encode())


def _relay(read_end: int, timeout: float, logfile: str | None) -> int:
    """In the command that detached: copy what the daemon reports to stderr until it is ready
    (0) or gone (1)."""
    deadline = time.monotonic() + timeout
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                sys.stderr.write(
                    f"the detached worker is still starting after {timeout:g}s; it goes on in "
                    f"the background (its log: {logfile or 'none, see --logfile'})\n"
                )
                return 0
            readable, _, _ = select.select([pipe], [], [], remaining)
            if not readable:
                continue
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            if READY_MARK in pending:
                sys.stderr.write(pending.split(READY_MARK, 1)[0].decode(errors="replace"))
                return 0
            *lines, pending = pending.split(b"\n")
            for line in lines:
                sys.stderr.write(line.decode(errors="replace") + "\n")
    if pending:
        sys.stderr.write(pending.decode(errors="replace") + "\n")
    where = f"see its log file {logfile}" if logfile else "run it without --detach to see why"
    sys.stderr.write(f"Error: the detached worker stopped before it was ready ({where})\n")
    return 1


class Notifier:
    """The detached worker's side of the pipe: its errors go to the command that detached it
    until it is ready, then :meth:`ready` releases that command (exit 0)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        os.set_inheritable(fd, False)  # prefork children and task subprocesses must not hold it
        self._handler = _PipeHandler(self)
        self._handler.setLevel(logging.ERROR)
        self._handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    @classmethod
    def from_environ(cls) -> Notifier | None:
        """The notifier of a process :func:`detach` started (the variable is consumed, so a
        restart or a subprocess does not find it)."""
        text = os.environ.pop(NOTIFY_FD_ENV, None)
        if text is None or not text.isdigit():
            return None
        return cls(int(text))

    def watch_logging(self) -> None:
        """Copy every ERROR or CRITICAL log line to the waiting command until ready."""
        logging.getLogger().addHandler(self._handler)

    def write(self, text: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, text.encode(errors="replace"))
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self.close()  # the waiting command is gone (killed): nobody to tell

    def ready(self) -> None:
        """The worker consumes: release the waiting command."""
        self.write(READY_MARK.decode())
        self.close()

    def close(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class _PipeHandler(logging.Handler):
    def __init__(self, notifier: Notifier) -> None:
        super().__init__()
        self.notifier = notifier

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.notifier.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
