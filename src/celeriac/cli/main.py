"""The ``celeriac`` click group: ``-A`` app discovery, logging set-up, and error handling.

A user mistake prints the usage and a one-line reason (exit 2); a configuration or broker error
prints one line (exit 1); neither prints a traceback.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import PackageNotFoundError, version

import click

from celeriac.app import Celeriac
from celeriac.cli.discovery import find_app
from celeriac.errors import CeleriacError

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def package_version() -> str:
    try:
        return version("celeriac")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def setup_logging(level: str) -> None:
    """The only place celeriac configures logging handlers: library code only logs."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise click.BadParameter(f"unknown log level {level!r}", param_hint="-l/--loglevel")
    logging.basicConfig(level=numeric, format=LOG_FORMAT, stream=sys.stderr, force=True)
    # the AMQP client logs each dropped connection with a traceback, again per channel; the
    # transport already says it once per outage ("broker unavailable ... is back"), so at
    # INFO and above only its critical lines pass (at DEBUG, everything does)
    if numeric > logging.DEBUG:
        for name in ("aiormq", "aio_pika"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


class AppContext:
    """What the group passes to its commands: the app spec, found lazily."""

    def __init__(self, spec: str | None, broker: str | None, backend: str | None) -> None:
        self.spec = spec
        self.broker = broker
        self.backend = backend
        self._app: Celeriac | None = None

    @property
    def app(self) -> Celeriac:
        if self._app is None:
            if not self.spec:
                raise click.UsageError("this command needs an app: -A module[:attr]")
            app = find_app(self.spec)
            overrides: dict[str, str] = {}
            if self.broker:
                overrides["broker_url"] = self.broker
            if self.backend:
                overrides["result_backend"] = self.backend
            if overrides:
                app.config_from_object(overrides)
            self._app = app
        return self._app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), "--version", prog_name="celeriac")
@click.option("-A", "--app", "spec", metavar="MODULE[:ATTR]", help="The app to use.")
@click.option("-b", "--broker", help="Broker URL (overrides broker_url).")
@click.option("--result-backend", help="Result backend URL (overrides result_backend).")
@click.pass_context
def cli(
    ctx: click.Context, spec: str | None, broker: str | None, result_backend: str | None
) -> None:
    """celeriac: a distributed task queue."""
    ctx.obj = AppContext(spec, broker, result_backend)


def _register() -> None:
    from celeriac.cli import call, dlq, purge, result, worker

    for module in (worker, call, result, purge, dlq):
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, turning every known error into one line and an exit code."""
    try:
        status = cli.main(args=argv, prog_name="celeriac", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CeleriacError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)
