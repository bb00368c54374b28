"""A view that creates a row and sends a task that reads it, after the commit."""

from __future__ import annotations

from django.db import transaction  # type: ignore[import-untyped]
from django.http import HttpRequest, JsonResponse  # type: ignore[import-untyped]

from celeriac.contrib.django.task import apply_async_on_commit
from djtests.shop.models import Order
from djtests.shop.tasks import read_order


def create_order(request: HttpRequest, alias: str) -> JsonResponse:
    """POST ``note`` (and ``rollback=1`` to roll the transaction back after sending)."""
    with transaction.atomic(using=alias):
        order = Order.objects.using(alias).create(note=request.POST["note"])
        result = apply_async_on_commit(read_order, (order.pk, alias), using=alias)
        rollback = request.POST.get("rollback") == "1"
        if rollback:
            transaction.set_rollback(True, using=alias)
    return JsonResponse({"order": order.pk, "task_id": result.id, "rolled_back": rollback})
