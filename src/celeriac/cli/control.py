"""``celeriac -A proj control COMMAND [ARGS]``: tell the workers to do something, print replies.

As Celery's ``celery control``: ``revoke ID...``, ``terminate SIGNAL ID...``, ``rate_limit TASK
RATE``, ``time_limit TASK SOFT [HARD]``, ``pool_grow [N]``, ``pool_shrink [N]``, ``autoscale
MAX [MIN]``, ``add_consumer QUEUE [EXCHANGE [TYPE [ROUTING_KEY]]]``, ``cancel_consumer QUEUE``,
``enable_events``, ``disable_events``, ``heartbeat``, ``shutdown`` (``--list`` shows them).
``revoke`` here also keeps the revoke on the broker, as ``app.control.revoke`` does, so that
workers started later honour it. ``-d``, ``-t`` and ``--json`` as for ``inspect``; exit status
69 when nobody answered, 1 when a worker answered with an error.
"""

from __future__ import annotations

import click

from celeriac.cli.main import AppContext
from celeriac.cli.remote import (
    command_arguments,
    json_text,
    list_option,
    no_reply,
    remote_options,
    say,
)
from celeriac.control import flatten_reply


@click.command("control")
@click.argument("name", metavar="COMMAND")
@click.argument("args", nargs=-1)
@list_option("control")
@remote_options
@click.pass_obj
def command(
    ctx: AppContext,
    name: str,
    args: tuple[str, ...],
    timeout: float,
    destination: list[str] | None,
    as_json: bool,
) -> int:
    """Send the control COMMAND to the workers and print their replies."""
    _, arguments = command_arguments("control", name, args)
    control = ctx.app.control
    try:
        if name in ("revoke", "terminate"):
            ids = arguments.pop("task_id", [])
            if not ids:
                raise click.UsageError(f"{name} needs at least one task id")
            if name == "terminate":
                arguments["terminate"] = True
            replies = control.revoke(
                ids, destination=destination, reply=True, timeout=timeout, **arguments
            )
        else:
            replies = control.broadcast(
                name, arguments=arguments, destination=destination, reply=True, timeout=timeout
            )
    finally:
        control.close()
    if not replies:
        raise no_reply()
    if as_json:
        click.echo(json_text(replies))
    else:
        for node, reply in flatten_reply(replies).items():
            say(node, reply)
    failed = any(isinstance(r, dict) and "error" in r for item in replies for r in item.values())
    return 1 if failed else 0
