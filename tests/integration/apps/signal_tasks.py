"""A worker app whose module connects Celery's signals, as a Celery project's ``celery.py`` does.

Imported by the worker process (``-A apps.signal_tasks``) and again by each of its prefork
children, so a receiver hears the signals of the process it lives in. Every receiver appends one
line ``<signal> <pid> <details>`` to the file named by ``ITEST_SIGNAL_LOG`` (one ``O_APPEND``
write per line: whole lines, whichever process writes), which the test reads.

``ITEST_SIGNAL_OWN_LOGGING=1`` connects a ``setup_logging`` receiver that configures logging
itself (a handler on stderr with its own format), as projects with their own logging set-up do:
celeriac must then configure no handler, in the worker and in each child.

The app and tasks come from :func:`apps.sqlite_tasks.build_app` (same broker and backend file);
``s.log`` logs a line from inside a task, through the logger a task module would use.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from apps.sqlite_tasks import DB_ENV, LEASE_ENV, append_line, build_app
from celeriac import Celeriac, signals

SIGNAL_LOG_ENV = "ITEST_SIGNAL_LOG"
OWN_LOGGING_ENV = "ITEST_SIGNAL_OWN_LOGGING"
OWN_FORMAT = "OWN %(levelname)s %(processName)s %(message)s"


def record(name: str, details: str = "") -> None:
    path = os.environ.get(SIGNAL_LOG_ENV)
    if path:
        append_line(path, f"{name} {os.getpid()} {details}".rstrip())


def _hostname(sender: Any) -> str:
    return sender if isinstance(sender, str) else f"<{type(sender).__name__}>"


@signals.celeryd_init.connect
def on_celeryd_init(sender: Any, instance: Any, conf: Any, options: Any, **kwargs: Any) -> None:
    record("celeryd_init", f"{_hostname(sender)} pool={options.get('pool')}")


@signals.celeryd_after_setup.connect
def on_after_setup(sender: Any, instance: Any, **kwargs: Any) -> None:
    record("celeryd_after_setup", f"{_hostname(sender)} queues={len(instance.queues)}")


@signals.worker_ready.connect
def on_ready(sender: Any, **kwargs: Any) -> None:
    record("worker_ready", f"{type(sender).__name__} {sender.controller.hostname}")


@signals.worker_before_create_process.connect
def on_before_create(sender: Any, **kwargs: Any) -> None:
    record("worker_before_create_process", type(sender).__name__)


@signals.worker_process_init.connect
def on_process_init(sender: Any, **kwargs: Any) -> None:
    record("worker_process_init", _hostname(sender))


@signals.worker_process_shutdown.connect
def on_process_shutdown(sender: Any, pid: int, exitcode: int, **kwargs: Any) -> None:
    record("worker_process_shutdown", f"{_hostname(sender)} pid={pid} exitcode={exitcode}")


@signals.worker_shutting_down.connect
def on_shutting_down(sender: Any, sig: Any, how: str, exitcode: int, **kwargs: Any) -> None:
    record("worker_shutting_down", f"{_hostname(sender)} sig={sig} how={how} exitcode={exitcode}")


@signals.worker_shutdown.connect
def on_shutdown(sender: Any, **kwargs: Any) -> None:
    record("worker_shutdown", type(sender).__name__)


@signals.after_setup_logger.connect
def on_after_setup_logger(sender: Any, logger: Any, logfile: Any, **kwargs: Any) -> None:
    record("after_setup_logger", f"{logger.name} logfile={logfile}")


if os.environ.get(OWN_LOGGING_ENV) == "1":

    @signals.setup_logging.connect
    def own_logging(loglevel: int, logfile: Any, **kwargs: Any) -> None:
        record("setup_logging", f"loglevel={loglevel} logfile={logfile}")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(OWN_FORMAT))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(loglevel)


def _build() -> Celeriac | None:
    db = os.environ.get(DB_ENV)
    if db is None:
        return None
    app = build_app(db, float(os.environ.get(LEASE_ENV, "60")))

    @app.task(name="s.log")
    def log_line(text: str) -> int:
        logging.getLogger("signal_tasks").warning("task says %s", text)
        return os.getpid()

    return app


#: The worker's app (``-A apps.signal_tasks``); ``None`` when the tests import this module.
app = _build()
