"""Exchanges and bindings in kombu's Redis layout, and where a restored message goes.

kombu keeps a binding as a member of ``_kombu.binding.<exchange>`` and an exchange's type in
each process's memory only (an exchange it does not know is direct). celeriac records the
types it declares in a hash of its own (``<prefix>exchanges``), so that every celeriac process
routes alike; an exchange it did not declare (a Celery app's) is taken as topic when one of its
bindings carries kombu's pattern, else as direct. Topic keys are matched with AMQP's rules on
the binding's key (kombu's regex is written beside it for kombu's producers, never read).

kombu has no headers exchange: declaring one in this layout is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from celeriac.errors import TransportError
from celeriac.routing import Binding, Exchange
from celeriac.routing.matching import topic_matches
from celeriac.transports.redis.kombu_layout import KombuNames, member, split_member, topic_pattern

_SCAN_SPECIAL = frozenset("\\*?[]")


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob that matches only itself."""
    return "".join("\\" + c if c in _SCAN_SPECIAL else c for c in text)


def kind_of(declared: bytes | str | None, members: Iterable[bytes | str]) -> str:
    """An exchange's type: as celeriac declared it, else topic when a binding carries a
    pattern (only kombu's topic bindings do), else direct (kombu's default)."""
    if declared:
        return declared.decode() if isinstance(declared, bytes) else declared
    for value in members:
        split = split_member(value)
        if split is not None and split[1]:
            return "topic"
    return "direct"


def lookup(kind: str, members: Iterable[bytes | str], routing_key: str) -> list[str]:
    """The queues an exchange of ``kind`` with these binding members sends ``routing_key`` to."""
    found: dict[str, None] = {}
    for value in members:
        split = split_member(value)
        if split is None:
            continue
        key, _, queue = split
        if (
            kind == "fanout"
            or (kind == "topic" and topic_matches(key, routing_key))
            or (kind not in ("fanout", "topic") and key == routing_key)
        ):
            found[queue] = None
    return list(found)


async def declare_exchange(client: Any, names: KombuNames, exchange: Exchange) -> None:
    """Record ``exchange``'s type; refuse another type for a name already recorded, and the
    headers type (kombu has none)."""
    if not exchange.name:
        return
    if exchange.type == "headers":
        raise TransportError(
            f"exchange {exchange.name!r}: kombu's Redis layout has no headers exchanges "
            "(use direct, topic or fanout, or the native layout)"
        )
    if await client.hsetnx(names.exchanges, exchange.name, exchange.type):
        return
    existing = await client.hget(names.exchanges, exchange.name)
    if existing is not None and bytes(existing).decode() != exchange.type:
        raise TransportError(
            f"exchange {exchange.name!r} is declared as {bytes(existing).decode()}, "
            f"not {exchange.type} (AMQP's PRECONDITION_FAILED)"
        )


async def exchange_kind(client: Any, names: KombuNames, exchange: str) -> str | None:
    """The type of ``exchange`` (see :func:`kind_of`); None when nobody declared it."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hget(names.exchanges, exchange)
        pipe.smembers(names.table(exchange))
        declared, members = await pipe.execute()
    if declared is None and not members:
        return None
    return kind_of(declared, members)


async def bind(client: Any, names: KombuNames, binding: Binding, kind: str | None) -> None:
    """Add ``binding`` as kombu does: to the exchange's table and, since kombu 5.7, to its
    permanent set (the table of a queue without ``x-expires`` is never swept)."""
    if kind is None:
        raise TransportError(
            f"exchange {binding.exchange!r} is not declared: declare it (or a queue bound to "
            "it) first"
        )
    pattern = topic_pattern(binding.routing_key) if kind == "topic" else ""
    value = member(binding.routing_key, pattern, binding.queue)
    async with client.pipeline(transaction=True) as pipe:
        pipe.sadd(names.table(binding.exchange), value)
        pipe.sadd(names.permanent(binding.exchange), value)
        await pipe.execute()


async def unbind(client: Any, names: KombuNames, binding: Binding) -> None:
    """Remove every member binding ``binding.queue`` with ``binding.routing_key`` (whatever
    pattern a writer put beside it)."""
    for key in (names.table(binding.exchange), names.permanent(binding.exchange)):
        gone = [
            value
            for value in await client.smembers(key)
            if (split_member(value) or ("", "", ""))[::2] == (binding.routing_key, binding.queue)
        ]
        if gone:
            await client.srem(key, *gone)


async def unbind_everywhere(client: Any, names: KombuNames, queue: str) -> None:
    """Remove ``queue`` from every binding table (a SCAN of the tables: deleting a queue is
    rare, and kombu keeps no list of a queue's bindings)."""
    for table in ("_kombu.binding.", "_kombu.binding_permanent."):
        pattern = glob_escape(names.glob + table) + "*"
        async for key in client.scan_iter(match=pattern, count=1000):
            gone = [
                value
                for value in await client.smembers(key)
                if (split_member(value) or ("", "", ""))[2] == queue
            ]
            if gone:
                await client.srem(key, *gone)


async def routes(
    client: Any, names: KombuNames, exchanges: Sequence[str]
) -> dict[str, tuple[str, list[bytes]]]:
    """Each exchange's type and binding members, read in one round trip."""
    if not exchanges:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for exchange in exchanges:
            pipe.hget(names.exchanges, exchange)
            pipe.smembers(names.table(exchange))
        replies = await pipe.execute()
    found: dict[str, tuple[str, list[bytes]]] = {}
    for at, exchange in enumerate(exchanges):
        declared, members = replies[2 * at], list(replies[2 * at + 1])
        found[exchange] = (kind_of(declared, members), members)
    return found


__all__ = [
    "bind",
    "declare_exchange",
    "exchange_kind",
    "glob_escape",
    "kind_of",
    "lookup",
    "routes",
    "unbind",
    "unbind_everywhere",
]
