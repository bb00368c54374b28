"""``celeriac -A proj status``: which workers answer ``ping`` now; exit 0 only if one did.

As Celery's ``celery status`` (``-d``, ``-t``, ``--json``; "No nodes replied within time
constraint" and exit status 69 when none answered), so it serves as a liveness probe: a worker
answers ``ping`` from its event loop while its pool is busy with long tasks, in every pool, so a
busy worker is not taken for a dead one. A Kubernetes probe of the worker in its own pod::

    livenessProbe:
      exec:
        command: ["celeriac", "-A", "proj", "status", "-d", "celeriac@$(HOSTNAME)", "-t", "5"]
      initialDelaySeconds: 30
      periodSeconds: 60
      timeoutSeconds: 15
      failureThreshold: 3

(``celeriac@$(HOSTNAME)`` is the default node name of a worker started without ``-n``; with a
destination the probe returns as soon as that worker answered.)
"""

from __future__ import annotations

import click

from celeriac.cli.main import AppContext
from celeriac.cli.remote import json_text, no_reply, nodes_online, remote_options, say_replies
from celeriac.control import flatten_reply


@click.command(
    "status",
    epilog="As a liveness probe (exit 0 while the worker answers, busy or not): "
    "celeriac -A proj status -d celeriac@$HOSTNAME -t 5",
)
@remote_options
@click.pass_obj
def command(ctx: AppContext, timeout: float, destination: list[str] | None, as_json: bool) -> int:
    """Show the workers that answer a ping; exit 69 if none does."""
    control = ctx.app.control
    try:
        replies = control.ping(destination=destination, timeout=timeout)
    finally:
        control.close()
    if not replies:
        raise no_reply()
    by_node = flatten_reply(replies)
    if as_json:  # the document alone, for scripts (Celery adds the count line after it)
        click.echo(json_text(by_node))
        return 0
    say_replies(by_node, show_body=False)
    nodes_online(len(by_node))
    return 0
