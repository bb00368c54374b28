"""The shop's tasks, declared as a reusable Django app declares them (``@shared_task``)."""

from __future__ import annotations

from typing import Any

from django.db import connections  # type: ignore[import-untyped]

from celeriac import shared_task
from djtests.shop.models import Order

#: Every raw database connection a task used, kept alive so that its position identifies it.
_seen: list[Any] = []


@shared_task(name="shop.read_order")
def read_order(order_id: int, alias: str) -> str:
    """The note of an order the sender created: fails if the row is not committed yet."""
    note: str = Order.objects.using(alias).get(pk=order_id).note
    return note


@shared_task(name="shop.connection_token")
def connection_token(alias: str) -> int:
    """Which physical connection this task ran its query on (a number, by first use)."""
    conn = connections[alias]
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    raw = conn.connection
    for index, seen in enumerate(_seen):
        if seen is raw:
            return index
    _seen.append(raw)
    return len(_seen) - 1


@shared_task(name="shop.backend_pid")
def backend_pid(alias: str) -> int:
    """The PostgreSQL server process serving this task's connection."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid: int = cursor.fetchone()[0]
    return pid


@shared_task(name="shop.add")
def add(x: int, y: int) -> int:
    return x + y


@shared_task(name="shop.total")
def total(values: list[int]) -> int:
    return sum(values)


@shared_task(name="shop.refuse")
def refuse(why: str) -> None:
    raise ValueError(why)
