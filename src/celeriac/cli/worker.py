"""``celeriac -A app worker``: run a worker in this process, or detached as a daemon.

Celery's worker command line, so that a systemd unit or an init script keeps its ``ExecStart``:
``-n w1@%h``, ``--pidfile``, ``--logfile`` (``%n``, ``%h``, ``%i``, ``%I`` expanded as Celery
does), ``-D/--detach``, ``--uid``/``--gid``/``--umask``/``--executable``, ``-S/--statedb``,
``-E``, ``-O fair``, ``-X``, and the ``--without-*`` flags. Options that name something celeriac
does differently say so in ``--help``; those that would silently do nothing here
(``-P gevent``) are refused with what to use instead. ``-B`` embeds a beat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from celeriac.cli.main import AppContext, setup_logging
from celeriac.cli.worker_options import KiBSize, PoolName
from celeriac.errors import CeleriacError, ImproperlyConfigured
from celeriac.utils.daemon import (
    DETACHED_ENV,
    Notifier,
    Pidfile,
    detach,
    drop_privileges,
    parse_umask,
    process_alive,
)
from celeriac.utils.nodenames import default_nodename, host_format, node_format
from celeriac.worker.pools import starter

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def _split(value: str | None) -> list[str] | None:
    return [q.strip() for q in value.split(",") if q.strip()] if value else None


def _expand(template: str | None, nodename: str, hint: str) -> str | None:
    """A file name with its abbreviations expanded for the worker's main process."""
    if not template:
        return None
    try:
        return node_format(template, nodename)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


@click.command("worker")
@click.option(
    "-n",
    "--hostname",
    help="Node name, e.g. 'w1@%h'. Expands %h (hostname), %n (its first label), %d (domain). "
    "A name without '@' is the host part (Celery's rule). Default: celeriac@HOSTNAME.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Pool size (default: worker_concurrency, else CPU count).",
)
@click.option("-P", "--pool", type=PoolName(), help="Execution pool ('processes' is prefork).")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (default: all declared).")
@click.option("-X", "--exclude-queues", help="Comma-separated queues not to consume.")
@click.option("-l", "--loglevel", default="warning", show_default=True, help="Logging level.")
@click.option(
    "-f",
    "--logfile",
    help="Log to this file instead of stderr (appended to; reopened when logrotate moves it). "
    "%n %h %d expand to the node's name, host and domain; %i to the process index (0 for the "
    "worker, N for prefork child N) and %I to '-N' (empty for the worker), so "
    "--logfile=%n%I.log gives each child its own file. Without them the children append to "
    "the worker's file.",
)
@click.option(
    "--pidfile",
    help="Write the worker's pid to this file (%n %h %d expand as in --logfile); refuse to "
    "start if it names a running process; removed at exit.",
)
@click.option(
    "-D",
    "--detach",
    is_flag=True,
    help="Run in the background as a daemon (double fork, new session, stdin from /dev/null, "
    "stdout and stderr to --logfile or /dev/null). Returns once the worker consumes (exit 0) "
    "or failed to start (exit 1, with its error).",
)
@click.option("--uid", help="Run as this user (name or id); needs root.")
@click.option("--gid", help="Run with this group (name or id); needs root.")
@click.option("--umask", help="File creation mask, e.g. 0o22 (octal with a leading 0).")
@click.option(
    "--executable", help="The Python interpreter a detached worker runs (default: this one)."
)
@click.option(
    "-S",
    "--statedb",
    help="Keep revoked task ids in this file, so a revoke survives a restart (default: "
    "worker_state_db; %n %h %d expand as in --logfile). A JSON file written atomically, not "
    "Celery's shelve: point it at a new path.",
)
@click.option(
    "-E",
    "--task-events",
    "--events",
    "task_events",
    is_flag=True,
    default=None,
    help="Send task events (worker_send_task_events): task-received, -started, -succeeded... "
    "in Celery's format; worker events are always sent.",
)
@click.option(
    "-O",
    "--optimization",
    type=click.Choice(["default", "fair"]),
    help="Accepted for Celery command lines; celeriac always behaves as 'fair': a prefork "
    "child is only handed a task when it is idle (the next one waits in the worker, not "
    "behind a long task in a busy child).",
)
@click.option(
    "--prefetch-multiplier", type=click.IntRange(min=1), help="Messages held per pool slot."
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    help="Seconds a warm shutdown waits for running tasks before turning cold.",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Hard time limit per task in seconds (prefork kills the child).",
)
@click.option(
    "--soft-time-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Soft time limit per task in seconds (raises SoftTimeLimitExceeded in the task).",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Replace a prefork child after it ran this many tasks.",
)
@click.option(
    "--max-memory-per-child",
    type=KiBSize(),
    help="Replace a prefork child whose resident memory exceeds this after a task: KiB for a "
    "bare number, as in Celery (200000), or a size such as 300MB or 1GB.",
)
@click.option(
    "--autoscale",
    metavar="MAX,MIN",
    help="Grow the pool up to MAX with the backlog, shrink to MIN when idle.",
)
@click.option("--reload", is_flag=True, help="Restart when a source file of the app changes.")
@click.option(
    "--without-gossip",
    is_flag=True,
    help="Accepted: celeriac workers have no gossip (nothing to turn off).",
)
@click.option(
    "--without-mingle",
    is_flag=True,
    help="Accepted: celeriac workers have no mingle, they share no state at start-up.",
)
@click.option(
    "--without-heartbeat",
    is_flag=True,
    help="Send no heartbeat_sent signals. The heartbeat that renews the leases of running "
    "tasks' messages always runs (without it they would go to another worker).",
)
@click.option(
    "-B",
    "--beat",
    is_flag=True,
    help="Run a beat (periodic tasks) inside this worker. Safe on every worker of a fleet: "
    "the beats elect one leader through the broker, and each slot fires once.",
)
@click.option("-s", "--schedule-filename", "--schedule", hidden=True, expose_value=False)
@click.option("--scheduler", hidden=True, expose_value=False)
@click.pass_obj
def command(ctx: AppContext, /, **options: Any) -> int:
    """Start a worker: consume the queues, run tasks, store results."""
    daemon = os.environ.pop(DETACHED_ENV, None) is not None
    notifier = Notifier.from_environ() if daemon else None
    try:
        return _run(ctx, options, daemon, notifier)
    except (CeleriacError, click.ClickException) as exc:
        if notifier is not None:  # the command that detached us shows it, then leaves
            text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            notifier.write(f"Error: {text}\n")
        raise
    finally:
        if notifier is not None:
            notifier.close()


def _run(ctx: AppContext, o: dict[str, Any], daemon: bool, notifier: Notifier | None) -> int:
    try:
        nodename = host_format(default_nodename(o["hostname"]))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-n/--hostname") from None
    try:
        umask = parse_umask(o["umask"]) if o["umask"] else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--umask") from None
    logfile = _expand(o["logfile"], nodename, "-f/--logfile")
    pidfile = _expand(o["pidfile"], nodename, "--pidfile")
    _expand(o["statedb"], nodename, "-S/--statedb")
    drop_privileges(o["uid"], o["gid"])  # first: what follows must work as that user
    if o["detach"] and not daemon:
        _limits(o)
        _configure(ctx.app, o)  # a bad -A or setting fails here, on the terminal, not detached
        _check_files(logfile, pidfile)
        return detach(
            ["-m", "celeriac", *(ctx.argv if ctx.argv is not None else sys.argv[1:])],
            executable=o["executable"] or sys.executable,
            workdir=os.getcwd(),
            umask=umask,
            logfile=logfile,
        )
    if umask is not None:
        os.umask(umask)
    try:
        return _serve(ctx, o, daemon, notifier, nodename, _limits(o))
    finally:
        starter.cool()  # a server the pool did not take (another pool; a failed start)


def _limits(o: dict[str, Any]) -> tuple[int, int] | None:
    """``--autoscale MAX,MIN``, checked."""
    from celeriac.worker.autoscale import parse_autoscale

    try:
        return parse_autoscale(o["autoscale"]) if o["autoscale"] else None
    except ImproperlyConfigured as exc:
        raise click.BadParameter(str(exc), param_hint="--autoscale") from None


def _serve(
    ctx: AppContext,
    o: dict[str, Any],
    daemon: bool,
    notifier: Notifier | None,
    nodename: str,
    limits: tuple[int, int] | None,
) -> int:
    from celeriac import signals
    from celeriac.worker.worker import Worker

    app = _configure(ctx.app, o)  # before logging: the app connects setup_logging receivers
    worker = Worker(
        app,
        queues=_split(o["queues"]),
        exclude_queues=_split(o["exclude_queues"]),
        concurrency=o["concurrency"],
        pool=o["pool"],
        prefetch_multiplier=o["prefetch_multiplier"],
        hostname=nodename,
        shutdown_timeout=o["shutdown_timeout"],
        time_limit=o["time_limit"],
        soft_time_limit=o["soft_time_limit"],
        max_tasks_per_child=o["max_tasks_per_child"],
        max_memory_per_child=o["max_memory_per_child"],
        app_spec=ctx.spec,
        autoscale=limits,
        reload=o["reload"],
        beat=o["beat"],
        pidfile=o["pidfile"],
        statedb=o["statedb"],
        without_heartbeat=o["without_heartbeat"],
        send_task_events=o["task_events"],
    )
    if (
        ctx.spec
        and worker.pool_name == "prefork"
        and worker.pool_options.start_method == "forkserver"
    ):
        _import_for_children(app)
        # before logging, connections, threads and the loop: what the server forks is clean
        held = notifier.fd if notifier is not None else None
        starter.fork_ahead(ctx.spec, keep_out=[] if held is None else [held])
    # after the worker exists, as in Celery: celeryd_init receivers run before logging is set up
    setup_logging(o["loglevel"], o["logfile"], nodename, app.conf)
    if notifier is not None:
        notifier.watch_logging()
        ready = notifier.ready
        signals.worker_ready.connect(lambda **_: ready(), weak=False)
    status = worker.run()
    if worker.restart_requested:
        # A fresh process re-imports the changed modules; exec keeps the pid and the terminal.
        logging.shutdown()
        if daemon:
            os.environ[DETACHED_ENV] = "1"  # the same command line: it must not detach again
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - re-exec our own command line
    return status


def _import_for_children(app: Celeriac) -> None:
    """Import what every prefork child imports on its way to its first task (the pool's and
    the child's modules, the broker's transport and its fetcher's), here, before the fork
    server is forked from this process, so that no child imports them again. Nothing is
    connected. A failure is left to the place that reports it properly (the pool's start)."""
    # the codec a socket's first host name lookup loads, and what unpickles a child's Process
    import encodings.idna  # noqa: F401
    import multiprocessing.popen_forkserver  # noqa: F401

    import celeriac.worker.pools.prefork  # noqa: F401  (imports the child's modules too)

    with contextlib.suppress(Exception):
        app.create_transport().fetcher()


def _configure(app: Celeriac, o: dict[str, Any]) -> Celeriac:
    """The settings the command line gives: ``-E`` is Celery's ``worker_send_task_events``."""
    if o["task_events"]:
        app.config_from_object({"worker_send_task_events": True})
    return app


def _check_files(logfile: str | None, pidfile: str | None) -> None:
    """Before detaching, while errors still reach the terminal: the log file can be written
    and the pid file names no running worker."""
    if logfile:
        try:
            with open(logfile, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise CeleriacError(f"cannot write the log file {logfile}: {exc}") from None
    if pidfile:
        pid = Pidfile(pidfile).read_pid()
        if pid is not None and process_alive(pid):
            raise CeleriacError(
                f"pid file {os.path.abspath(pidfile)} names a running process (pid {pid}): is "
                "this node already running?"
            )
