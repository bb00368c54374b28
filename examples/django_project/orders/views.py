"""Create an order and confirm it in the background, once the order is committed."""

from django.db import transaction  # type: ignore[import-untyped]
from django.http import (  # type: ignore[import-untyped]
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
)
from django.shortcuts import get_object_or_404  # type: ignore[import-untyped]
from proj.celery import app

from celeriac.contrib.django.task import delay_on_commit
from orders.models import Order
from orders.tasks import confirm


def create_order(request: HttpRequest) -> HttpResponse:
    """``POST note=...``: the order and the id of the task that confirms it. The task is sent
    when the transaction commits, so the worker always finds the row."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    with transaction.atomic():
        order = Order.objects.create(note=request.POST["note"])
        result = delay_on_commit(confirm, order.pk)
        order.task_id = result.id  # known now, stored in the same transaction
        order.save(update_fields=["task_id"])
    return JsonResponse({"order": order.pk, "task_id": result.id}, status=201)


def order_status(request: HttpRequest, order_id: int) -> HttpResponse:
    """The order and its task's state (``SUCCESS`` once the worker confirmed it)."""
    order = get_object_or_404(Order, pk=order_id)
    state = app.AsyncResult(order.task_id).state if order.task_id else None
    return JsonResponse({"order": order.pk, "confirmed": order.confirmed, "task": state})
