"""``celeriac -A app worker``: run a worker in this process."""

from __future__ import annotations

import click

from celeriac.cli.main import AppContext, setup_logging
from celeriac.worker.pools import POOLS
from celeriac.worker.worker import Worker


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
) -> int:
    """Start a worker: consume the queues, run tasks, store results."""
    setup_logging(loglevel)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    worker = Worker(
        ctx.app,
        queues=names,
        concurrency=concurrency,
        pool=pool,
        prefetch_multiplier=prefetch_multiplier,
        hostname=hostname,
        shutdown_timeout=shutdown_timeout,
    )
    return worker.run()
