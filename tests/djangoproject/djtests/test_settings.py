"""Settings from Django's settings, with either namespace, and when the Django fixup applies."""

from __future__ import annotations

import logging
import types

import pytest
from pytest_django import Settings

from celeriac import Celeriac
from celeriac.contrib.django.fixup import DjangoFixup
from celeriac.contrib.django.task import DjangoTask
from celeriac.errors import ImproperlyConfigured
from celeriac.task import Task
from djtests.conftest import django_app
from djtests.shop.tasks import read_order

FIXUP = "celeriac.contrib.django.fixup:fixup"


def test_the_celeriac_namespace_reads_celeriac_names() -> None:
    app = django_app("CELERIAC")
    assert app.conf.task_default_queue == "dj"
    assert app.conf.timezone == "UTC"  # Django's TIME_ZONE
    app.close()


def test_the_celery_namespace_reads_celerys_names_so_a_project_switches_by_an_import(
    settings: Settings,
) -> None:
    settings.CELERY_BROKER_URL = "memory://djtests-celery"
    settings.CELERY_TASK_DEFAULT_QUEUE = "dj-celery"
    app = Celeriac("djtests")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    assert app.conf.broker_url == "memory://djtests-celery"
    assert app.conf.task_default_queue == "dj-celery"
    app.close()


def test_a_changed_django_setting_is_read(settings: Settings) -> None:
    settings.CELERIAC_TASK_ACKS_LATE = True
    settings.CELERIAC_WORKER_PREFETCH_MULTIPLIER = 1
    app = django_app()
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    app.close()


def test_a_misspelt_setting_fails_naming_itself_and_the_likely_one(
    settings: Settings,
) -> None:
    settings.CELERIAC_TASK_ACKS_LAET = True
    with pytest.raises(ImproperlyConfigured, match=r"CELERIAC_TASK_ACKS_LAET.*task_acks_late"):
        django_app()


def test_a_celery_name_under_the_celeriac_namespace_is_not_read_and_says_so(
    caplog: pytest.LogCaptureFixture, settings: Settings
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = "dj-celery"
    with caplog.at_level(logging.WARNING):
        app = django_app("CELERIAC")
    assert app.conf.task_default_queue == "dj"
    assert "CELERY_TASK_DEFAULT_QUEUE is not read" in caplog.text
    app.close()


def test_django_settings_install_the_fixup_and_its_task_class() -> None:
    app = django_app()
    fixup = app.installed_fixups[FIXUP]
    assert isinstance(fixup, DjangoFixup)
    assert app.task_cls is DjangoTask
    # the app's copy of a @shared_task declared before the app existed is a DjangoTask too
    assert isinstance(app.tasks[read_order.name], DjangoTask)

    @app.task
    def later() -> None: ...

    assert isinstance(later, DjangoTask)
    app.close()


def test_an_app_outside_django_gets_no_fixup() -> None:
    app = Celeriac("plain", broker="memory://plain-app")
    app.config_from_object(types.SimpleNamespace(broker_url="memory://plain-app"))
    assert app.installed_fixups == {}
    assert app.task_cls is Task
    app.close()


def test_django_settings_module_installs_the_fixup_at_creation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "djtests.settings")
    app = Celeriac("env", broker="memory://env-app")
    assert isinstance(app.installed_fixups[FIXUP], DjangoFixup)
    none = Celeriac("env", broker="memory://env-app", fixups=[])
    assert none.installed_fixups == {}
    assert none.task_cls is Task
    app.close()
    none.close()


def test_an_app_that_names_its_task_class_keeps_it() -> None:
    class Mine(DjangoTask):  # type: ignore[type-arg]
        pass

    app = Celeriac("mine", broker="memory://mine-app", task_cls=Mine)
    app.config_from_object("django.conf:settings", namespace="CELERIAC")
    assert app.task_cls is Mine
    app.close()


def test_a_fixup_that_cannot_be_imported_fails_naming_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="fixup 'nowhere:fixup' cannot be imported"):
        Celeriac("bad", broker="memory://bad-app", fixups=["nowhere:fixup"])
