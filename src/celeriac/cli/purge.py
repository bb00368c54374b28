"""``celeriac -A app purge``: remove every waiting message from queues (asks first)."""

from __future__ import annotations

import click

from celeriac.cli.main import AppContext


@click.command("purge")
@click.option("-Q", "--queues", help="Comma-separated queues (default: the app's queues).")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def command(ctx: AppContext, queues: str | None, force: bool) -> int:
    """Delete all waiting messages of the queues. Leased (running) messages are kept."""
    app = ctx.app
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    targets = app.queues(names)
    listing = ", ".join(q.name for q in targets)
    if not force:
        click.confirm(f"Purge every waiting message from {listing}?", abort=True)
    transport = app.create_transport()

    async def run() -> int:
        await transport.connect()
        try:
            total = 0
            for queue in targets:
                total += await transport.purge(queue.name)
            return total
        finally:
            await transport.close()

    total = app.producer.portal_call(run())
    click.echo(f"Purged {total} message{'s' if total != 1 else ''} from {listing}.")
    return 0
