"""``celeriac -A app result ID``: print a task's state and result."""

from __future__ import annotations

import contextlib

import click

from celeriac import states
from celeriac.cli.main import AppContext


@click.command("result")
@click.argument("task_id")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Wait up to this many seconds for the task to finish (default: don't wait).",
)
@click.option("--traceback", "show_traceback", is_flag=True, help="Show the stored traceback.")
@click.pass_obj
def command(ctx: AppContext, task_id: str, timeout: float | None, show_traceback: bool) -> int:
    """Show the state and result of TASK_ID; exit 1 if it failed."""
    result = ctx.app.AsyncResult(task_id)
    if timeout is not None:
        with contextlib.suppress(TimeoutError):
            result.get(timeout=timeout, propagate=False)
    state = result.state
    click.echo(f"{state}: {result.result!r}")
    if show_traceback and result.traceback:
        click.echo(result.traceback)
    return 1 if state in states.PROPAGATE_STATES else 0
