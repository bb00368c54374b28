"""``celeriac -A app call NAME``: send a task by name and print its id (or wait for its result)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import orjson

from celeriac.cli.main import AppContext


def _json(value: str | None, what: str, kind: type) -> Any:
    if value is None:
        return kind()
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=what)
    return parsed


@click.command("call")
@click.argument("name")
@click.option("-a", "--args", "args_json", help="Positional arguments as JSON, e.g. '[2, 3]'.")
@click.option("-k", "--kwargs", "kwargs_json", help="Keyword arguments as JSON, e.g. '{\"x\": 1}'.")
@click.option("--countdown", type=float, help="Run no sooner than this many seconds from now.")
@click.option(
    "--eta",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    help="Run no sooner than this ISO time.",
)
@click.option("--expires", type=float, help="Seconds after which the task is not run.")
@click.option("-Q", "--queue", help="Queue to send to.")
@click.option("--priority", type=click.IntRange(0, 9), help="0-9, higher first.")
@click.option("--serializer", help="Serializer for this message.")
@click.option(
    "--wait",
    "wait",
    type=float,
    default=None,
    help="Wait up to this many seconds and print the result.",
)
@click.pass_obj
def command(
    ctx: AppContext,
    name: str,
    args_json: str | None,
    kwargs_json: str | None,
    countdown: float | None,
    eta: datetime | None,
    expires: float | None,
    queue: str | None,
    priority: int | None,
    serializer: str | None,
    wait: float | None,
) -> int:
    """Send task NAME (it need not be importable here) and print its id."""
    args = _json(args_json, "--args", list)
    kwargs = _json(kwargs_json, "--kwargs", dict)
    options: dict[str, Any] = {
        k: v
        for k, v in {
            "queue": queue,
            "priority": priority,
            "serializer": serializer,
        }.items()
        if v is not None
    }
    result = ctx.app.send_task(
        name, args, kwargs, countdown=countdown, eta=eta, expires=expires, **options
    )
    click.echo(result.id)
    if wait is not None:
        value = result.get(timeout=wait, propagate=False)
        click.echo(f"{result.state}: {value!r}")
        return 0 if result.successful() else 1
    return 0
