"""``app.autodiscover_tasks()``: the tasks.py of Django's installed apps, found when a worker
loads the app (lazily, as Celery), not when the app is created."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from djtests.conftest import django_app

MODULE = "djtests.inventory.tasks"


@pytest.fixture
def undiscovered() -> Iterator[None]:
    """The inventory's tasks module not imported yet, before and after the test."""
    sys.modules.pop(MODULE, None)
    yield
    sys.modules.pop(MODULE, None)


@pytest.mark.usefixtures("undiscovered")
def test_autodiscover_finds_the_tasks_of_installed_apps_when_the_app_is_loaded() -> None:
    app = django_app()
    app.autodiscover_tasks()
    assert "inventory.count" not in app.tasks  # nothing imported yet: lazy
    assert MODULE not in sys.modules
    app.import_default_modules()  # what a worker (and each prefork child) does at start
    assert "inventory.count" in app.tasks
    assert app.tasks["shop.read_order"].name == "shop.read_order"
    assert app.tasks["inventory.count"].apply().get() == 42
    app.close()


@pytest.mark.usefixtures("undiscovered")
def test_autodiscover_with_force_imports_at_once() -> None:
    app = django_app()
    app.autodiscover_tasks(force=True)
    assert "inventory.count" in app.tasks
    app.close()
