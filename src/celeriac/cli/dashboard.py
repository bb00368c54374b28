"""``celeriac -A proj dashboard``: the web dashboard, on http://127.0.0.1:5555 by default.

    celeriac -A proj dashboard [--host 127.0.0.1] [--port 5555] [--db FILE] [-Q extra,queues]
    celeriac dashboard --hash-password          # reads a password, prints its scrypt hash

Login is always required: set ``CELERIAC_DASHBOARD_PASSWORD_HASH`` (from ``--hash-password``)
or ``CELERIAC_DASHBOARD_TOKEN`` for operators, the ``_READONLY_`` ones for viewers; with none,
a random token is printed at start (see :mod:`celeriac.dashboard.auth`). Workers send task
events with ``-E`` (or ``celeriac control enable_events``); without them the dashboard shows
workers and queues but no task history.
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
import sys
from pathlib import Path

import click

from celeriac.cli.main import AppContext, setup_logging
from celeriac.errors import CeleriacError

logger = logging.getLogger("celeriac.dashboard")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hash_password() -> int:
    from celeriac.dashboard.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise click.ClickException("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise click.ClickException("a password needs at least 8 characters")
    click.echo(hash_password(password))
    return 0


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=5555, show_default=True, help="TCP port."
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("celeriac-dashboard.db"),
    show_default=True,
    help="The history file (SQLite): task history survives restarts here.",
)
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0, min_open=True),
    default=7.0,
    show_default=True,
    help="Keep task history this many days.",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=100),
    default=100_000,
    show_default=True,
    help="Keep at most this many tasks (the least recently updated go first).",
)
@click.option("-Q", "--queues", help="More queues to watch (comma-separated).")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.2),
    default=5.0,
    show_default=True,
    help="Seconds between two reads of queue depths and worker details.",
)
@click.option("--public-metrics", is_flag=True, help="Serve /metrics without a login.")
@click.option("--secure-cookies", is_flag=True, help="Mark cookies Secure (serving behind HTTPS).")
@click.option("-l", "--loglevel", default="info", show_default=True, help="Logging level.")
@click.option("--hash-password", is_flag=True, help="Read a password, print its hash, exit.")
@click.pass_obj
def command(
    ctx: AppContext,
    host: str,
    port: int,
    db: Path,
    retention_days: float,
    max_tasks: int,
    queues: str | None,
    poll_interval: float,
    public_metrics: bool,
    secure_cookies: bool,
    loglevel: str,
    hash_password: bool,
) -> int:
    """Serve the web dashboard: workers, tasks, queues, dead letters, beat, metrics."""
    if hash_password:
        return _hash_password()
    try:
        from celeriac.dashboard.auth import Auth
        from celeriac.dashboard.config import DashboardConfig
        from celeriac.dashboard.runtime import Dashboard
        from celeriac.dashboard.server import serve
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its bundle ({exc.name} is missing):"
            " pip install 'celeriac[dashboard]'"
        ) from None
    setup_logging(loglevel)
    try:
        auth = Auth.from_environ()
        config = DashboardConfig(
            host=host,
            port=port,
            db=db,
            retention_days=retention_days,
            max_tasks=max_tasks,
            poll_interval=poll_interval,
            queues=tuple(q.strip() for q in (queues or "").split(",") if q.strip()),
            public_metrics=public_metrics,
            secure_cookies=secure_cookies,
        )
        app = ctx.app
        dashboard = Dashboard(app, config)
    except CeleriacError as exc:
        raise click.ClickException(str(exc)) from None
    address = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    click.echo(f"celeriac dashboard on {address} (history in {db})", err=True)
    if auth.generated_token is not None:
        click.echo(
            f"log in with this token: {auth.generated_token}\n"
            "(made for this run; set CELERIAC_DASHBOARD_TOKEN or"
            " CELERIAC_DASHBOARD_PASSWORD_HASH to choose your own)",
            err=True,
        )
    if not _loopback(host) and not secure_cookies:
        click.echo(
            f"warning: listening on {host} without --secure-cookies: serve it behind HTTPS",
            err=True,
        )

    if not serve(dashboard, auth, loglevel):
        raise click.ClickException(f"could not listen on {host}:{port}")
    return 0
