"""RabbitMQ declarations for celeriac's topology: queue arguments, dead-letter queues, checks.

Functions over one :class:`~celeriac.transports.amqp.link.Link`, all on its control channel,
where a refused declaration costs nothing but that channel (reopened on next use).

* :func:`queue_arguments`: a queue's own ``arguments``, then ``x-max-priority`` (celeriac's 0-9
  mean what AMQP's do, so ``max_priority`` maps as is: no level wasted, as each costs RabbitMQ an
  internal queue) or ``x-queue-type: quorum`` (quorum queues in RabbitMQ 3.10 have no priorities,
  so a quorum queue gets none);
* :func:`declare_queue`: ``exclusive`` as the queue says (an ``auto_delete`` queue that does not
  say is exclusive: it goes with its connection even if no consumer ever started; a kombu
  ``Broadcast`` queue is not, as in kombu); a ``no_declare`` queue is not declared at all.
  A queue that already exists with other arguments (a Celery worker
  declared ``celery`` without priorities, say) is used as it is, with a warning, rather than
  failing every worker that did not declare it first. Celery is not as lenient: a Celery worker
  fails on a queue celeriac declared with priorities, so fleets that mix both set the transport
  option ``max_priority`` to 0 (or Celery's ``task_queue_max_priority`` to celeriac's levels);
* :func:`declare_dead_letters`: ``celeriac.dlx`` and ``<queue>.dlq``, the queue's type alike;
* :func:`check_exchanges`: a passive declare of the exchanges a batch names, so a batch with a
  missing one is refused before anything is sent;
* :func:`bind_queue` / :func:`unbind_queue`: a binding with its arguments, which RabbitMQ's own
  headers exchanges match against the AMQP headers table, where the task headers already are
  (:mod:`~.amqp_codec`); no emulation. An unbind must repeat the arguments to name the binding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiormq.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from celeriac.errors import TransportError
from celeriac.routing import Binding, Queue
from celeriac.transports.amqp.link import Link

logger = logging.getLogger("celeriac.transports.amqp")

DLX = "celeriac.dlx"


def queue_arguments(queue: Queue, queue_type: str, max_priority: int = 9) -> dict[str, Any]:
    """The ``x-`` arguments of ``queue`` under the transport's ``queue_type`` and
    ``max_priority`` options (``max_priority=0``: no priority queues, as Celery declares them).

    The queue's own arguments (kombu's ``queue_arguments``) go as they are: an ``x-max-priority``
    there (``10`` in Celery's documentation, say) wins over the transport's option."""
    args = dict(queue.arguments)
    quorum = args.get("x-queue-type") == "quorum" or (
        queue_type == "quorum" and queue.durable and not queue.auto_delete
    )
    levels = min(queue.max_priority, max_priority)
    if quorum:
        args["x-queue-type"] = "quorum"
    elif levels > 0:
        args.setdefault("x-max-priority", levels)
    return args


async def declare_queue(link: Link, queue: Queue, arguments: dict[str, Any]) -> None:
    """Declare ``queue`` (nothing for a ``no_declare`` one, assumed to exist)."""
    if queue.no_declare:
        return
    channel = await link.channel("control")
    try:
        await channel.queue_declare(
            queue.name,
            durable=queue.durable,
            auto_delete=queue.auto_delete,
            exclusive=bool(queue.exclusive),
            arguments=arguments,
        )
    except ChannelPreconditionFailed as exc:
        logger.warning(
            "queue %r exists on RabbitMQ with other arguments (%s); using it as it is",
            queue.name,
            exc,
        )
        channel = await link.channel("control")
        await channel.queue_declare(queue.name, passive=True)
    link.declared[f"exists:{queue.name}"] = time.monotonic()


async def declare_dead_letters(link: Link, queue: str, quorum: bool = False) -> None:
    """The ``celeriac.dlx`` exchange and ``<queue>.dlq``, bound by the queue's name."""
    key = f"dlq:{queue}"
    if key in link.declared:
        return
    channel = await link.channel("control")
    await channel.exchange_declare(DLX, exchange_type="direct", durable=True)
    args: dict[str, Any] = {"x-queue-type": "quorum"} if quorum else {}
    try:
        await channel.queue_declare(f"{queue}.dlq", durable=True, arguments=args)
    except ChannelPreconditionFailed:
        channel = await link.channel("control")
        await channel.queue_declare(f"{queue}.dlq", passive=True)
    await channel.queue_bind(f"{queue}.dlq", DLX, routing_key=queue)
    link.declared[key] = time.monotonic()


async def check_exchanges(link: Link, names: Iterable[str]) -> None:
    """Raise TransportError naming the first of ``names`` that does not exist."""
    for name in set(names) - link.known_exchanges:
        channel = await link.channel("control")
        try:
            await channel.exchange_declare(name, passive=True)
        except ChannelNotFoundEntity:
            raise TransportError(f"exchange {name!r} does not exist on RabbitMQ") from None
        link.known_exchanges.add(name)


def binding_key(binding: Binding) -> str:
    """The declarations key of a binding (a separator no exchange, queue or key uses), with its
    arguments as sorted JSON: bindings that differ only in arguments are two on RabbitMQ."""
    arguments = binding.arguments
    text = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode() if arguments else ""
    return f"bind\x1f{binding.exchange}\x1f{binding.queue}\x1f{binding.routing_key}\x1f{text}"


async def bind_queue(link: Link, binding: Binding) -> None:
    """``queue.bind`` with the binding's arguments (RabbitMQ validates ``x-match`` again)."""
    channel = await link.channel("control")
    await channel.queue_bind(
        binding.queue,
        binding.exchange,
        routing_key=binding.routing_key,
        arguments=dict(binding.arguments) or None,
    )


async def unbind_queue(link: Link, binding: Binding) -> None:
    """``queue.unbind`` of exactly that binding (same key, same arguments)."""
    channel = await link.channel("control")
    await channel.queue_unbind(
        binding.queue,
        binding.exchange,
        routing_key=binding.routing_key,
        arguments=dict(binding.arguments) or None,
    )
