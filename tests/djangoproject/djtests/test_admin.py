"""The admin pages: task results (read-only) and the default app's beat entries."""

from __future__ import annotations

import pytest
from django.test import Client  # type: ignore[import-untyped]

from celeriac import Celeriac, states
from celeriac.contrib.django.results.backend import DjangoBackend
from celeriac.contrib.django.results.models import TaskResult
from celeriac.results.base import ResultMeta

pytestmark = pytest.mark.django_db(transaction=True)


def test_results_are_listed_searched_and_shown_read_only(admin_client: Client) -> None:
    backend = DjangoBackend("django-db://")
    backend.store(ResultMeta("id-123", states.SUCCESS, {"total": 6}, name="shop.total"))
    backend.store(ResultMeta("id-456", states.FAILURE, {"exc_type": "ValueError"}, name="x.y"))
    page = admin_client.get("/admin/celeriac_results/taskresult/", {"q": "shop.total"})
    assert page.status_code == 200
    assert b"id-123" in page.content and b"id-456" not in page.content
    pk = TaskResult.objects.get(task_id="id-123").pk
    detail = admin_client.get(f"/admin/celeriac_results/taskresult/{pk}/change/")
    assert detail.status_code == 200
    assert b"total" in detail.content
    assert b'name="_save"' not in detail.content  # nothing to edit
    assert admin_client.get("/admin/celeriac_results/taskresult/add/").status_code == 403


def test_beat_entries_of_the_default_app_are_listed(admin_client: Client, dj_app: Celeriac) -> None:
    dj_app.beat.add("nightly-report", "shop.add", 3600.0, args=(1, 2))
    dj_app.beat.add("paused-one", "shop.total", 60.0, paused=True)
    page = admin_client.get("/admin/celeriac_results/beatentry/")
    assert page.status_code == 200, page.content
    text = page.content.decode()
    assert "nightly-report" in text and "shop.add" in text and "paused" in text
    assert "Cannot read" not in text
    index = admin_client.get("/admin/").content.decode()
    assert "Beat entries" in index and "Task results" in index


def test_the_beat_page_needs_a_staff_login(dj_app: Celeriac) -> None:
    page = Client().get("/admin/celeriac_results/beatentry/")
    assert page.status_code == 302  # to the login page
