"""``celeriac -A app beat``: run a beat, or look at and change the entries of a running fleet.

    celeriac -A proj beat -l info                 # run one (run any number: one leads)
    celeriac -A proj beat list                    # entries, their schedule, next and last run
    celeriac -A proj beat add NAME TASK --every 30 | --cron "*/15 * * * *" [--args JSON] ...
    celeriac -A proj beat pause|resume|remove|run-now NAME

A change is written to the broker's store and reaches the leading beat within a second.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click
import orjson

from celeriac.cli.main import AppContext, setup_logging
from celeriac.errors import CeleriacError, ImproperlyConfigured
from celeriac.schedules import crontab, schedule


@click.group("beat", invoke_without_command=True)
@click.option("-l", "--loglevel", default="warning", show_default=True, help="Logging level.")
@click.option("-f", "--logfile", help="Log to this file instead of stderr.")
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Seconds a leader holds its lease: a dead leader is replaced within this time.",
)
@click.option(
    "-s",
    "--schedule",
    "schedule_file",
    hidden=True,
    help="Accepted for Celery's sake: beat's state lives in the broker, not in a file.",
)
@click.option("-S", "--scheduler", hidden=True, help="Accepted for Celery's sake; not read.")
@click.option("--max-interval", hidden=True, type=float, help="Accepted; beat wakes as needed.")
@click.pass_context
def command(
    ctx: click.Context,
    loglevel: str,
    logfile: str | None,
    lease: float,
    schedule_file: str | None,
    scheduler: str | None,
    max_interval: float | None,
) -> int:
    """Run a beat (periodic tasks), or manage the entries with a subcommand."""
    if ctx.invoked_subcommand is not None:
        return 0
    app_context: AppContext = ctx.obj
    app = app_context.app
    setup_logging(loglevel, logfile)
    from celeriac.beat.scheduler import Beat  # the command, not its subcommands, runs one

    app.import_default_modules()  # on_after_configure handlers add their periodic tasks here
    beat = Beat(app, lease=lease)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, beat.stop)
        await beat.run()

    click.echo(f"celeriac beat {beat.node}: {len(app.conf.beat_schedule or {})} entries in code")
    asyncio.run(main())
    return 0


def _entries_table(app: Any) -> list[str]:
    entries = app.beat.list()
    runs = app.beat.runs()
    lines = []
    for entry in entries:
        last = runs.get(entry.name)
        state = "paused" if entry.paused else f"next {app.beat.next_run(entry):%Y-%m-%d %H:%M:%S}"
        lines.append(
            f"{entry.name:<30} {entry.task:<30} {entry.schedule!r:<40} {state}"
            + (f"  last {last:%Y-%m-%d %H:%M:%S}" if last else "")
            + ("  (changed at run time)" if entry.origin == "runtime" else "")
        )
    return lines


@command.command("list")
@click.pass_obj
def list_entries(ctx: AppContext) -> None:
    """The entries in the broker's store (written by a beat from the code, or at run time)."""
    lines = _entries_table(ctx.app)
    click.echo("\n".join(lines) if lines else "no entries (no beat has led yet, or none declared)")


@command.command("add")
@click.argument("name")
@click.argument("task")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), help="Interval, seconds.")
@click.option("--cron", metavar="'M H DOM MON DOW'", help="A crontab: five fields, Celery's.")
@click.option("--args", "args_json", default="[]", help="Positional arguments, as JSON.")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments, as JSON.")
@click.option("--queue", help="The queue to send to.")
@click.option(
    "--catch-up",
    type=click.Choice(["latest", "all", "skip"]),
    help="Slots missed while no beat led.",
)
@click.option("--overlap", type=click.Choice(["allow", "skip"]), help="Run while the last runs?")
@click.option("--jitter", type=click.FloatRange(min=0), help="Up to this many seconds later.")
@click.option("--expires", type=click.FloatRange(min=0), help="Not started after this many s.")
@click.pass_obj
def add(ctx: AppContext, /, name: str, task: str, **o: Any) -> None:
    """Add (or replace) the entry NAME, sending TASK."""
    if (o["every"] is None) == (o["cron"] is None):
        raise click.UsageError("give one of --every SECONDS or --cron 'M H DOM MON DOW'")
    try:
        args = orjson.loads(o["args_json"])
        kwargs = orjson.loads(o["kwargs_json"])
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--args/--kwargs") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise click.BadParameter("--args is a JSON list, --kwargs a JSON object")
    every = schedule(o["every"]) if o["every"] is not None else None
    try:
        sched = every if every is not None else _cron(o["cron"])
        policy = {k: o[k] for k in ("catch_up", "overlap", "jitter", "expires") if o[k] is not None}
        options = {"queue": o["queue"]} if o["queue"] else {}
        entry = ctx.app.beat.add(name, task, sched, args, kwargs, options, **policy)
    except ImproperlyConfigured as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"added {entry.name}: {entry.task} {entry.schedule!r}")


def _cron(text: str) -> crontab:
    fields = text.split()
    if len(fields) != 5:
        raise ImproperlyConfigured(
            f"--cron: {text!r} has {len(fields)} fields; five are needed: minute, hour, "
            "day of month, month, day of week"
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


def _one(action: str, doing: str) -> click.Command:
    @click.argument("name")
    @click.pass_obj
    def run(ctx: AppContext, name: str) -> None:
        try:
            result = getattr(ctx.app.beat, action)(name)
        except CeleriacError as exc:
            raise click.ClickException(str(exc)) from None
        suffix = f" (task id {result.id})" if action == "run_now" else ""
        click.echo(f"{doing} {name}{suffix}")

    run.__doc__ = f"{doing.capitalize()} the entry NAME."
    return click.command(action.replace("_", "-"))(run)


for _action, _doing in (
    ("pause", "paused"),
    ("resume", "resumed"),
    ("remove", "removed"),
    ("run_now", "sent"),
):
    command.add_command(_one(_action, _doing))
