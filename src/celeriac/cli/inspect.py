"""``celeriac -A proj inspect COMMAND [ARGS]``: ask the workers, print what each replied.

As Celery's ``celery inspect``: ``ping``, ``active``, ``reserved``, ``scheduled``,
``registered``, ``stats``, ``active_queues``, ``revoked``, ``conf``, ``query_task ID...``,
``clock``, ``report`` (``--list`` shows them with their arguments); ``-d w1@h,w2@h`` asks only
those nodes, ``-t`` is the seconds to wait, ``--json`` prints ``{node: reply}``. Exit status 69
and "No nodes replied within time constraint" when nobody answered.
"""

from __future__ import annotations

import click

from celeriac.cli.main import AppContext
from celeriac.cli.remote import (
    command_arguments,
    json_text,
    list_option,
    no_reply,
    nodes_online,
    remote_options,
    say_replies,
)


@click.command("inspect")
@click.argument("name", metavar="COMMAND")
@click.argument("args", nargs=-1)
@list_option("inspect")
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
    """Send the inspect COMMAND to the workers and print their replies."""
    _, arguments = command_arguments("inspect", name, args)
    inspect = ctx.app.control.inspect(timeout=timeout, destination=destination)
    try:
        replies = inspect._request(name, **arguments)
    finally:
        ctx.app.control.close()
    if not replies:
        raise no_reply()
    if as_json:
        click.echo(json_text(replies))
        return 0
    say_replies(replies)
    nodes_online(len(replies))
    return 0
