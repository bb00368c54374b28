"""``celeriac -A app dlq``: list dead-lettered messages with the reason each was refused."""

from __future__ import annotations

import click

from celeriac.cli.main import AppContext
from celeriac.transports.base import DeadLetter


@click.command("dlq")
@click.option("-Q", "--queues", help="Comma-separated queues (default: the app's queues).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.pass_obj
def command(ctx: AppContext, queues: str | None, limit: int) -> int:
    """Show the newest dead letters of each queue, newest first."""
    app = ctx.app
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    transport = app.create_transport()

    async def run() -> list[tuple[str, list[DeadLetter]]]:
        await transport.connect()
        try:
            return [
                (q.name, await transport.dead_letters(q.name, limit)) for q in app.queues(names)
            ]
        finally:
            await transport.close()

    for name, letters in app.producer.portal_call(run()):
        click.echo(f"{name}: {len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
        for letter in letters:
            click.echo(f"  deliveries={letter.delivery_count} reason={letter.reason}")
    return 0
