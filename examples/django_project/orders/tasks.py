"""The orders' tasks, found by ``app.autodiscover_tasks()`` when a worker starts."""

from proj.celery import app

from celeriac import shared_task
from orders.models import Order


@shared_task
def confirm(order_id: int) -> str:
    """Confirm an order; the row must be committed already (it is: see the views)."""
    order = Order.objects.get(pk=order_id)
    order.confirmed = True
    order.save(update_fields=["confirmed"])
    note: str = order.note
    return note


@app.task
def archive(order_id: int) -> int:
    """A task of the project's app: it has Celery's ``delay_on_commit`` method too."""
    return order_id
