"""``delay_on_commit``: the task is published when the view's transaction commits, so the worker
finds the row; a transaction that rolls back publishes nothing. On SQLite and PostgreSQL, with
a real worker (threads pool, in this process) on the in-memory broker."""

from __future__ import annotations

import pytest
from django.db import transaction  # type: ignore[import-untyped]
from django.test import Client  # type: ignore[import-untyped]

from celeriac import Celeriac, states
from celeriac.contrib.django.task import DjangoTask, apply_async_on_commit, delay_on_commit
from djtests.conftest import DATABASES
from djtests.shop.models import Order
from djtests.shop.tasks import read_order


@pytest.mark.parametrize("alias", DATABASES)
@pytest.mark.usefixtures("dj_worker")
def test_a_view_creates_a_row_and_the_task_sent_on_commit_reads_it(
    alias: str, dj_app: Celeriac, published: list[str]
) -> None:
    response = Client().post(f"/orders/{alias}/", {"note": "two croissants"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rolled_back"] is False
    assert published == [body["task_id"]]
    assert dj_app.AsyncResult(body["task_id"]).get(timeout=10) == "two croissants"


@pytest.mark.parametrize("alias", DATABASES)
@pytest.mark.usefixtures("dj_worker")
def test_a_view_that_rolls_back_sends_nothing(
    alias: str, dj_app: Celeriac, published: list[str]
) -> None:
    response = Client().post(f"/orders/{alias}/", {"note": "nothing", "rollback": "1"})
    assert response.status_code == 200, response.content
    assert response.json()["rolled_back"] is True
    assert published == []
    assert not Order.objects.using(alias).exists()
    # a later commit sends its own task only
    response = Client().post(f"/orders/{alias}/", {"note": "bread"})
    task_id = response.json()["task_id"]
    assert dj_app.AsyncResult(task_id).get(timeout=10) == "bread"
    assert published == [task_id]


@pytest.mark.parametrize("alias", DATABASES)
def test_nothing_is_published_before_the_commit(
    alias: str, dj_app: Celeriac, published: list[str]
) -> None:
    with transaction.atomic(using=alias):
        order = Order.objects.using(alias).create(note="later")
        result = apply_async_on_commit(read_order, (order.pk, alias), using=alias, countdown=0)
        assert published == []
    assert published == [result.id]


@pytest.mark.parametrize("alias", DATABASES)
def test_a_failing_transaction_publishes_nothing(
    alias: str, dj_app: Celeriac, published: list[str]
) -> None:
    def view() -> None:
        with transaction.atomic(using=alias):
            order = Order.objects.using(alias).create(note="lost")
            apply_async_on_commit(read_order, (order.pk, alias), using=alias)
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        view()
    assert published == []


@pytest.mark.parametrize("alias", DATABASES)
def test_a_nested_block_rolled_back_drops_its_send_only(
    alias: str, dj_app: Celeriac, published: list[str]
) -> None:
    def inner() -> None:
        with transaction.atomic(using=alias):
            apply_async_on_commit(read_order, (2, alias), using=alias)
            raise RuntimeError("the savepoint is rolled back")

    with transaction.atomic(using=alias):
        kept = apply_async_on_commit(read_order, (1, alias), using=alias)
        with pytest.raises(RuntimeError):
            inner()
    assert published == [kept.id]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_sends_at_once(dj_app: Celeriac, published: list[str]) -> None:
    result = delay_on_commit(read_order, 1, "default")
    assert published == [result.id]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dj_worker")
def test_celerys_methods_on_the_apps_tasks(dj_app: Celeriac, published: list[str]) -> None:
    task = dj_app.tasks[read_order.name]
    assert isinstance(task, DjangoTask)
    with transaction.atomic():
        order = Order.objects.create(note="soup")
        first = task.delay_on_commit(order.pk, "default")
        second = task.apply_async_on_commit((order.pk, "default"), priority=3)
        assert published == []
    assert published == [first.id, second.id]
    assert first.get(timeout=10) == second.get(timeout=10) == "soup"


@pytest.mark.django_db(transaction=True)
def test_wrong_arguments_fail_in_the_view_not_at_commit(
    dj_app: Celeriac, published: list[str]
) -> None:
    with pytest.raises(TypeError, match=r"shop\.read_order"), transaction.atomic():
        delay_on_commit(read_order, 1)  # type: ignore[call-arg]
    assert published == []


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_send_leaves_its_result_pending(dj_app: Celeriac) -> None:
    with transaction.atomic():
        result = delay_on_commit(read_order, 1, "default")
        transaction.set_rollback(True)
    assert result.state == states.PENDING


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dj_worker")
def test_celerys_methods_on_a_shared_task_object(dj_app: Celeriac, published: list[str]) -> None:
    """Celery's documented ``shared.delay_on_commit()``: the @shared_task object lends its
    default app's DjangoTask copy's methods (Celery's shared task is a proxy to that copy)."""
    dj_app.set_default()
    with transaction.atomic():
        order = Order.objects.create(note="leek")
        sent = read_order.delay_on_commit(order.pk, "default")  # type: ignore[attr-defined]
        assert published == []
    assert published == [sent.id]
    assert sent.get(timeout=10) == "leek"
    with pytest.raises(AttributeError, match="no attribute 'delay_on_comit'"):
        read_order.delay_on_comit  # type: ignore[attr-defined]  # noqa: B018
