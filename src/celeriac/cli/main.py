"""The ``celeriac`` command's entry point: logging set-up, the app context, error handling.

A user mistake prints the usage and a one-line reason (exit 2); a configuration or broker error
prints one line (exit 1); neither prints a traceback.

This module is imported by more than the CLI: every prefork child of a worker started as the
``celeriac`` script imports it again (``multiprocessing``'s spawn re-runs the parent's main
script, which imports :func:`main`). So it imports click, the click group and its commands
(:mod:`celeriac.cli.group`) only when :func:`main` runs, and reads the package version only
for ``--version``: a child pays for none of them.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from celeriac.errors import AppNotFound, CeleriacError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.app.config import Settings
    from celeriac.cli.group import cli as cli


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # ~10 ms: --version only

    try:
        return version("celeriac")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def setup_logging(
    level: str,
    logfile: str | None = None,
    nodename: str | None = None,
    conf: Settings | None = None,
) -> None:
    """Configure this command's logging (with the worker's prefork children, the only places
    celeriac does: library code only logs). ``setup_logging`` receivers take it over, as in
    Celery; ``logfile`` may hold ``%n``, ``%h``, ``%i``... for ``nodename``; ``conf``: the app's
    settings, for ``worker_log_format``, ``worker_log_datefmt`` and ``worker_hijack_root_logger``
    (see :mod:`celeriac.utils.logsetup`)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        import click  # a CLI caller's mistake: the CLI has imported click already

        raise click.BadParameter(f"unknown log level {level!r}", param_hint="-l/--loglevel")
    from celeriac.utils.logsetup import configure  # a prefork child imports this module too

    shape: dict[str, Any] = {}
    if conf is not None:
        redirect = None
        if conf.worker_redirect_stdouts:
            redirect = logging.getLevelName(conf.worker_redirect_stdouts_level.upper())
        shape = {
            "fmt": conf.worker_log_format,
            "datefmt": conf.worker_log_datefmt,
            "hijack": conf.worker_hijack_root_logger,
            "redirect_level": redirect if isinstance(redirect, int) else None,
        }
    try:
        configure(numeric, logfile, nodename=nodename, **shape)
    except (OSError, ValueError) as exc:  # a log file that cannot be opened, a bad %x
        import click

        raise click.BadParameter(str(exc), param_hint="-f/--logfile") from None


class AppContext:
    """What the group passes to its commands: the app spec, found lazily."""

    def __init__(
        self,
        spec: str | None,
        broker: str | None,
        backend: str | None,
        argv: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.broker = broker
        self.backend = backend
        #: The command line as given (without the program name), when known: what a detached
        #: worker runs again.
        self.argv = argv
        self._app: Celeriac | None = None

    @property
    def app(self) -> Celeriac:
        if self._app is None:
            import click  # a command is running: click is imported already

            if not self.spec:
                raise click.UsageError("this command needs an app: -A module[:attr]")
            from celeriac.app.loader import find_app

            try:
                app = find_app(self.spec)
            except AppNotFound as exc:
                raise click.BadParameter(str(exc), param_hint="-A") from None
            overrides: dict[str, str] = {}
            if self.broker:
                overrides["broker_url"] = self.broker
            if self.backend:
                overrides["result_backend"] = self.backend
            if overrides:
                app.config_from_object(overrides)
            self._app = app
        return self._app


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, turning every known error into one line and an exit code."""
    import click

    from celeriac.cli.group import cli

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # obj: the command line, which the group keeps in its AppContext (see ``cli``)
        status = cli.main(args=args, prog_name="celeriac", standalone_mode=False, obj=args)
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


if not TYPE_CHECKING:  # hidden from type checkers, which would accept any name then

    def __getattr__(name: str) -> Any:
        """``celeriac.cli.main.cli``, the click group, where it was before it moved to
        :mod:`celeriac.cli.group` (see the module docstring)."""
        if name == "cli":
            from celeriac.cli.group import cli

            return cli
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
