"""Where an exchange sends a message: AMQP's topic and headers matching, and :func:`route`.

The brokers without native exchanges (memory, SQLite, Redis) call :func:`route` over the
bindings they store; RabbitMQ does the same itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from celeriac.routing.entities import Binding, typed


def _words(text: str) -> tuple[str, ...]:
    """Split a routing key or pattern into words; the empty key has no words at all."""
    return tuple(text.split(".")) if text else ()


@lru_cache(maxsize=8192)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """True when ``routing_key`` matches the AMQP topic ``pattern`` (``*`` one word, ``#`` any).

    A dynamic programme over the key's word positions, one pattern word at a time: ``reachable[j]``
    says the pattern words seen so far can consume exactly the first ``j`` words of the key. ``#``
    may swallow zero or more words, so it spreads reachability forward. Iterative on purpose: a
    recursive matcher overflows the stack on keys of a few thousand words, which the transports
    without AMQP's 255-byte key limit (memory, SQLite, Redis) would let through.
    """
    if "*" not in pattern and "#" not in pattern:
        return pattern == routing_key
    pat, key = _words(pattern), _words(routing_key)
    reachable = [True] + [False] * len(key)
    for word in pat:
        if word == "#":
            for j in range(1, len(key) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            reachable = [False] + [
                reachable[j] and (word == "*" or word == key[j]) for j in range(len(key))
            ]
            if not any(reachable):
                return False
    return reachable[len(key)]


_MISSING = object()


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """True when a message with ``headers`` matches a headers-exchange binding's ``arguments``.

    RabbitMQ's rules (``rabbit_exchange_type_headers``, 3.13 and later):

    * ``x-match`` is ``all`` (the default: every argument must match, so a binding with no other
      argument matches every message) or ``any`` (one must, so with none nothing matches);
    * arguments named ``x-...`` are ignored unless ``x-match`` is ``all-with-x`` or
      ``any-with-x``; ``x-match`` itself always is;
    * an argument matches when the header of its name is present with an equal value of the same
      type (see :func:`~celeriac.routing.entities.typed`); one whose value is ``None`` (AMQP's
      *void*) matches when the header is present at all, whatever its value.

    RabbitMQ before 3.13 compared numbers by value (``1`` matched ``1.0``); celeriac follows the
    current rule.
    """
    mode = arguments.get("x-match", "all")
    with_x = mode in ("all-with-x", "any-with-x")
    want_all = mode in ("all", "all-with-x")
    for name, expected in arguments.items():
        if name == "x-match" or (not with_x and name.startswith("x-")):
            continue
        found = headers.get(name, _MISSING)
        hit = found is not _MISSING and (expected is None or typed(expected) == typed(found))
        if hit != want_all:  # a miss decides "all", a hit decides "any"
            return hit
    return want_all


def route(
    exchange_type: str,
    bindings: Iterable[Binding],
    routing_key: str,
    headers: Mapping[str, Any] | None = None,
) -> list[str]:
    """The queues a message published with ``routing_key`` reaches, each once, in binding order.

    ``headers`` are the message's headers: only a headers exchange reads them (and ignores the
    routing key, as RabbitMQ does).
    """
    seen: dict[str, None] = {}
    for binding in bindings:
        if exchange_type == "fanout":
            hit = True
        elif exchange_type == "topic":
            hit = topic_matches(binding.routing_key, routing_key)
        elif exchange_type == "headers":
            hit = headers_match(binding.arguments, headers or {})
        else:
            hit = binding.routing_key == routing_key
        if hit:
            seen.setdefault(binding.queue, None)
    return list(seen)


__all__ = ["headers_match", "route", "topic_matches"]
