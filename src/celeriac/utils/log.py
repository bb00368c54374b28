"""``get_task_logger`` and ``get_logger``, as Celery users import them from ``celery.utils.log``.

A task logger is a plain :class:`logging.Logger` (so ``logger.info(...)``, levels and handlers work
as usual) whose records name the task that wrote them: each record gets ``task_name`` and
``task_id`` attributes (``"???"`` outside a task, as in Celery) and its message is prefixed with
``name[id]: `` while a task runs, which is what Celery's default ``worker_task_log_format`` shows.
Like Celery's, a task logger without a parent of its own hangs under the ``celeriac.task`` logger,
so one level or handler there applies to every task logger.
"""

from __future__ import annotations

import logging

from celeriac.context import current_request

#: The parent of every task logger (Celery's ``celery.task``).
TASK_LOGGER = "celeriac.task"


class TaskFilter(logging.Filter):
    """Adds ``task_name``/``task_id`` to a record and names the task in its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_request()
        if request is None or not request.id:
            record.task_name = record.task_id = "???"
            return True
        record.task_name, record.task_id = request.task, request.id
        if not getattr(record, "_celeriac_task_prefixed", False):
            prefix = f"{request.task}[{request.id}]: ".replace("%", "%%")
            record.msg = prefix + (record.msg if isinstance(record.msg, str) else str(record.msg))
            record._celeriac_task_prefixed = True
        return True


_TASK_FILTER = TaskFilter()


def get_logger(name: str) -> logging.Logger:
    """A logger by name (Celery's ``get_logger``)."""
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """The logger a task module uses: ``logger = get_task_logger(__name__)``."""
    if name in (TASK_LOGGER, "celery.task"):
        raise RuntimeError(f"logger name {name!r} is reserved for the task loggers' parent")
    logger = logging.getLogger(name)
    if _TASK_FILTER not in logger.filters:
        logger.addFilter(_TASK_FILTER)
    if logger.parent is logging.root:
        logger.parent = logging.getLogger(TASK_LOGGER)
    return logger
