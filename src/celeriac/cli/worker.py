"""``celeriac -A app worker``: run a worker in this process."""

from __future__ import annotations

import logging
import os
import sys

import click

from celeriac.cli.main import AppContext, setup_logging
from celeriac.errors import ImproperlyConfigured
from celeriac.worker.autoscale import parse_autoscale
from celeriac.worker.pools import POOLS
from celeriac.worker.worker import Worker

UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
}


class SizeType(click.ParamType[int]):
    """A memory size: ``300MB``, ``1.5GB``, ``200000`` (bytes); 1 KB is 1024 bytes."""

    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().replace(" ", "")
        number = text.rstrip("KMGB")
        unit = text[len(number) :]
        try:
            size = int(float(number) * UNITS[unit])
        except (ValueError, KeyError):
            self.fail(f"{value!r} is not a size such as 300MB or 1GB", param, ctx)
        if size <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return size


SIZE = SizeType()


@click.command("worker")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Pool size (default: worker_concurrency, else CPU count).",
)
@click.option("-P", "--pool", type=click.Choice(sorted(POOLS)), help="Execution pool.")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (default: all declared).")
@click.option("-n", "--hostname", help="Worker name (default: celeriac@HOST).")
@click.option("-l", "--loglevel", default="warning", show_default=True, help="Logging level.")
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
    type=SIZE,
    help="Replace a prefork child whose resident memory exceeds this (e.g. 300MB).",
)
@click.option(
    "--autoscale",
    metavar="MAX,MIN",
    help="Grow the pool up to MAX with the backlog, shrink to MIN when idle.",
)
@click.option("--reload", is_flag=True, help="Restart when a source file of the app changes.")
@click.pass_obj
def command(
    ctx: AppContext,
    concurrency: int | None,
    pool: str | None,
    queues: str | None,
    hostname: str | None,
    loglevel: str,
    prefetch_multiplier: int | None,
    shutdown_timeout: float | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    autoscale: str | None,
    reload: bool,
) -> int:
    """Start a worker: consume the queues, run tasks, store results."""
    setup_logging(loglevel)
    try:
        limits = parse_autoscale(autoscale) if autoscale else None
    except ImproperlyConfigured as exc:
        raise click.BadParameter(str(exc), param_hint="--autoscale") from None
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    worker = Worker(
        ctx.app,
        queues=names,
        concurrency=concurrency,
        pool=pool,
        prefetch_multiplier=prefetch_multiplier,
        hostname=hostname,
        shutdown_timeout=shutdown_timeout,
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        app_spec=ctx.spec,
        autoscale=limits,
        reload=reload,
    )
    status = worker.run()
    if worker.restart_requested:
        # A fresh process re-imports the changed modules; exec keeps the pid and the terminal.
        logging.shutdown()
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - re-exec our own command line
    return status
