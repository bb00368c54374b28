"""The ``celeriac`` click group: ``-A``, ``-b``, ``--result-backend``, ``--workdir``, ``--version``.

Apart from :mod:`celeriac.cli.main` because of what imports that module: besides the CLI
itself, every prefork child of a worker started as the ``celeriac`` script (``multiprocessing``'s
spawn re-imports the parent's main script, which imports :func:`~celeriac.cli.main.main`). A
child never parses a command line, so it should not pay for click (~20 ms) nor for the
commands and the worker modules they import: this module is imported only when ``main`` runs.

Each command lives in ``celeriac.cli.<name>`` as ``command`` and is imported when it is run
(or listed by ``--help``), so that ``celeriac call`` never imports the worker.
"""

from __future__ import annotations

import importlib
import os

import click

from celeriac.cli.main import AppContext, package_version
from celeriac.utils.daemon import DETACHED_ENV

#: Command name -> the module that defines it as ``command``.
COMMANDS: dict[str, str] = {
    name: f"celeriac.cli.{name}"
    for name in (
        "beat",
        "call",
        "control",
        "dashboard",
        "dlq",
        "events",
        "inspect",
        "keys",
        "multi",
        "purge",
        "result",
        "status",
        "worker",
    )
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in COMMANDS:
            found = importlib.import_module(COMMANDS[cmd_name]).command
            if not isinstance(found, click.Command):  # pragma: no cover - a programming error
                raise TypeError(f"{COMMANDS[cmd_name]}.command is not a click command")
            self.add_command(found, cmd_name)
        return found


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--version``, as ``click.version_option`` prints it, with the distribution's version
    read only when asked for (reading it means importing :mod:`importlib.metadata`)."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"celeriac, version {package_version()}", color=ctx.color)
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
@click.option("-A", "--app", "spec", metavar="MODULE[:ATTR]", help="The app to use.")
@click.option("-b", "--broker", help="Broker URL (overrides broker_url).")
@click.option("--result-backend", help="Result backend URL (overrides result_backend).")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Change to this directory first (the app, relative file names and a detached worker "
    "are found from there).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    spec: str | None,
    broker: str | None,
    result_backend: str | None,
    workdir: str | None,
) -> None:
    """celeriac: a distributed task queue."""
    # A detached worker runs this same command line again from the directory it was detached
    # in: it is already there, and a relative --workdir would lead it one step further.
    if workdir and not os.environ.get(DETACHED_ENV):
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise click.BadParameter(f"{workdir}: {exc.strerror}", param_hint="--workdir") from None
    argv = ctx.obj if isinstance(ctx.obj, list) else None  # main() passes the command line
    ctx.obj = AppContext(spec, broker, result_backend, argv)
