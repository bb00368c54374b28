"""Configuring log handlers: done by the command line and by each prefork child, nowhere else.

Celery's contract, kept: before configuring anything, :data:`~celeriac.signals.setup_logging` is
sent; if any receiver is connected, celeriac configures no handler at all (the receivers own
logging, say with ``logging.config.dictConfig``). Otherwise the root logger gets one handler,
on stderr or on the log file, and :data:`~celeriac.signals.after_setup_logger` then
:data:`~celeriac.signals.after_setup_task_logger` let receivers add to it.

The worker's settings shape it as in Celery: ``worker_log_format`` and ``worker_log_datefmt``
the lines, ``worker_hijack_root_logger=False`` keeps the handlers a program put on the root logger
(celeriac then adds none of its own, only sets the level).

A log file name may hold the node-name abbreviations (:mod:`celeriac.utils.nodenames`):
``%n`` and ``%h`` for the node, ``%i``/``%I`` for the process, so ``--logfile=%n%I.log`` writes
the worker's lines to ``w1.log`` and prefork child 2's to ``w1-2.log``; without ``%i``/``%I``
the worker and its children append to the same file. The file is opened in append mode and
reopened when it is moved away (``WatchedFileHandler``), so logrotate needs no ``copytruncate``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from celeriac import signals
from celeriac.utils.logs import LOG_FORMAT
from celeriac.utils.nodenames import node_format

__all__ = ["TASK_LOGGER", "LogSetup", "LoggingProxy", "configure", "current", "redirect_stdouts"]

#: The parent of the task loggers (Celery's ``celery.task``).
TASK_LOGGER = "celeriac.task"
#: Clients that log each dropped connection again per channel: only their critical lines pass
#: above DEBUG (the transport already says it once per outage).
_CHATTY = ("aiormq", "aio_pika")


@dataclass(frozen=True, slots=True)
class LogSetup:
    """What this process configured; a prefork pool hands it to its children."""

    level: int
    #: The log file as given, abbreviations unexpanded (each child expands its own ``%i``).
    logfile: str | None
    format: str
    nodename: str | None
    datefmt: str | None = None
    #: ``worker_redirect_stdouts``: the level ``print()`` output is logged at, or None.
    redirect_level: int | None = None


_current: LogSetup | None = None


def current() -> LogSetup | None:
    """How this process's logging was configured by :func:`configure`, if it was."""
    return _current


def configure(
    level: int,
    logfile: str | None = None,
    *,
    nodename: str | None = None,
    index: int | None = None,
    fmt: str = LOG_FORMAT,
    datefmt: str | None = None,
    hijack: bool = True,
    redirect_level: int | None = None,
) -> bool:
    """Configure this process's logging (see the module docstring). ``logfile``: a file name,
    expanded for ``nodename`` and the process ``index`` (``None``: the worker itself). Returns
    False when ``setup_logging`` receivers took it over."""
    global _current
    _current = LogSetup(level, logfile, fmt, nodename, datefmt, redirect_level)
    path = node_format(logfile, nodename or "", index) if logfile else None
    arguments = {"loglevel": level, "logfile": path, "format": fmt, "colorize": False}
    responses = signals.setup_logging.send(None, **arguments)
    for _, response in responses:
        if isinstance(response, Exception):  # as Celery: a failing set-up stops the program
            raise response
    if responses:
        return False
    root = logging.getLogger()
    if hijack:
        for old in root.handlers[:]:
            root.removeHandler(old)
            old.close()
    if not root.handlers:  # unless the program's own handlers were kept (no hijack)
        handler: logging.Handler
        if path:
            from logging.handlers import WatchedFileHandler  # only when logging to a file

            handler = WatchedFileHandler(path, encoding="utf-8")
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt, datefmt))
        root.addHandler(handler)
    root.setLevel(level)
    if level > logging.DEBUG:
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    signals.after_setup_logger.send(None, logger=root, **arguments)
    signals.after_setup_task_logger.send(None, logger=logging.getLogger(TASK_LOGGER), **arguments)
    if redirect_level is not None:
        redirect_stdouts(redirect_level)
    return True


class LoggingProxy:
    """A file that writes to a logger, line by line: ``sys.stdout`` and ``sys.stderr`` of a
    worker with ``worker_redirect_stdouts`` (Celery's default), so a task's ``print()`` reaches
    the worker's log with its time and process. A write made while logging (a handler that
    itself writes to the redirected stream) goes to the original stream instead of looping."""

    def __init__(self, logger: logging.Logger, level: int, original: TextIO) -> None:
        self.logger, self.level, self.original = logger, level, original
        self._buffer = ""
        self._inside = threading.local()

    def write(self, text: str) -> int:
        if getattr(self._inside, "active", False):
            return self.original.write(text)
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        self._inside.active = True
        try:
            for line in lines:
                if line.strip():
                    self.logger.log(self.level, "%s", line.rstrip())
        finally:
            self._inside.active = False
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._buffer.strip():
            self.write("\n")

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:
        return self.original.encoding


def redirect_stdouts(level: int) -> None:
    """Send ``print()`` and other writes to ``sys.stdout``/``sys.stderr`` to the log (the
    handlers keep the streams they were made with, so their own output is unaffected)."""
    logger = logging.getLogger("celeriac.redirected")
    if not isinstance(sys.stdout, LoggingProxy):
        sys.stdout = LoggingProxy(logger, level, sys.stdout)
    if not isinstance(sys.stderr, LoggingProxy):
        sys.stderr = LoggingProxy(logger, level, sys.stderr)
