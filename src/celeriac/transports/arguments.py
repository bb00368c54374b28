"""AMQP queue arguments on the brokers that emulate AMQP (memory, SQLite, Redis).

They honour ``x-max-priority`` (the queue's priority range: see
:class:`celeriac.routing.Queue`) and ignore every other argument, which
:func:`report_ignored_arguments` logs once per process for each queue: as a warning for those that
change what a consumer would see on RabbitMQ (``x-message-ttl``, ``x-expires``, ``x-max-length``,
``x-dead-letter-exchange``, ``x-single-active-consumer``...: here messages stay until consumed,
and every consumer gets some), at debug level for RabbitMQ's storage choices (``x-queue-type``,
``x-queue-mode``...). They are not refused, so that one set of settings serves RabbitMQ in
production and these brokers in tests or development, as kombu's emulated transports ignore them
too.
"""

from __future__ import annotations

import logging

from celeriac.routing import Queue

logger = logging.getLogger(__name__)

#: Queue arguments that are how RabbitMQ stores a queue, not what its consumers see.
STORAGE_ARGUMENTS: frozenset[str] = frozenset(
    {
        "x-queue-type",
        "x-queue-mode",
        "x-queue-version",
        "x-queue-master-locator",
        "x-queue-leader-locator",
        "x-quorum-initial-group-size",
        "x-quorum-target-group-size",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
    }
)
#: Queue arguments the emulating brokers honour.
HONOURED_ARGUMENTS: frozenset[str] = frozenset({"x-max-priority"})
_reported: set[tuple[str, tuple[str, ...]]] = set()


def report_ignored_arguments(queue: Queue) -> None:
    """Log, once per process for each queue and set of arguments, the queue arguments that
    these brokers ignore (see the module's docstring for why they are not refused)."""
    ignored = tuple(sorted(set(queue.arguments) - HONOURED_ARGUMENTS))
    if not ignored or (queue.name, ignored) in _reported:
        return
    _reported.add((queue.name, ignored))
    visible = [name for name in ignored if name not in STORAGE_ARGUMENTS]
    if visible:
        logger.warning(
            "queue %r: argument(s) %s have no effect on this broker, which emulates AMQP and "
            "honours only x-max-priority: messages stay until consumed, any consumer may take "
            "them",
            queue.name,
            ", ".join(visible),
        )
    storage = [name for name in ignored if name in STORAGE_ARGUMENTS]
    if storage:
        logger.debug(
            "queue %r: RabbitMQ storage argument(s) %s do not apply to this broker",
            queue.name,
            ", ".join(storage),
        )


__all__ = ["HONOURED_ARGUMENTS", "STORAGE_ARGUMENTS", "report_ignored_arguments"]
