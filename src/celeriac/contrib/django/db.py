"""Django database connections around work that is not a request: a task, a result read or write.

Django opens a connection per thread on first use and relies on the request cycle to close it:
``close_old_connections`` at each request's start and end closes a connection that is unusable
(an error occurred and it no longer answers) or older than ``CONN_MAX_AGE`` (``0``, the default:
after every request). A worker has no requests, so without the same calls around each task a
connection lives for the worker's lifetime, and the first task after a database restart, or after
the server dropped an idle connection, fails on a dead socket. These helpers give tasks and the
results backend Django's request semantics, with one difference: a connection inside a
transaction (``atomic``) is never touched, since closing it would roll the transaction back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _on_event_loop() -> bool:
    """Whether this thread runs an event loop, where Django refuses synchronous database calls
    (closing included); such a thread holds no connection to close."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def close_old_connections() -> None:
    """Close this thread's connections that are unusable or past ``CONN_MAX_AGE``."""
    from django.db import connections  # type: ignore[import-untyped]

    if _on_event_loop():
        return
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def close_all_connections() -> None:
    """Close every connection this thread opened (a process starting or leaving)."""
    from django.db import connections

    if _on_event_loop():
        return
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()


#: Per thread: how deep each alias is in :func:`connection_for` (only the outermost closes).
_depth = threading.local()


@contextlib.contextmanager
def connection_for(alias: str) -> Iterator[Any]:
    """The connection wrapper of ``alias`` for one unit of work; afterwards (the outermost unit
    of this thread) it is closed if it became unusable or obsolete, as at a request's end."""
    from django.db import connections

    conn = connections[alias]
    depths: dict[str, int] = _depth.__dict__.setdefault("by_alias", {})
    depths[alias] = depths.get(alias, 0) + 1
    try:
        yield conn
    finally:
        depths[alias] -= 1
        if not depths[alias] and not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def run_idempotent(alias: str, work: Callable[[], T]) -> T:
    """Run ``work`` (safe to repeat) on ``alias``; if the connection was broken under it (a
    database restart, an idle connection the server dropped), run it once more on a new one.

    Not inside a transaction: there the failure belongs to the caller's transaction."""
    from django.db import InterfaceError, OperationalError

    with connection_for(alias) as conn:
        try:
            return work()
        except (OperationalError, InterfaceError):
            if conn.in_atomic_block:
                raise
            conn.close()
    with connection_for(alias):
        return work()
