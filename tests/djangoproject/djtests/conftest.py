"""Django configured for these tests only, and the fixtures they share.

``settings.configure()`` from :mod:`djtests.settings`, then ``django.setup()``, when this
directory is collected: not ``DJANGO_SETTINGS_MODULE``, which every app of the rest of the suite
would take as a Django project (the Django fixup applies when it is set).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import django.conf  # type: ignore[import-untyped]
import pytest

from djtests import settings as test_settings

settings = django.conf.settings
if settings.configured:  # pragma: no cover - another test configured Django in this process
    raise RuntimeError("tests/djangoproject needs Django's settings to itself; they are configured")
settings.configure(
    **{name: getattr(test_settings, name) for name in dir(test_settings) if name.isupper()}
)
django.setup()

from celeriac import Celeriac, signals  # noqa: E402
from celeriac.testing import worker_thread  # noqa: E402
from celeriac.worker.worker import Worker  # noqa: E402
from djtests.shop import tasks as shop_tasks  # noqa: E402, F401  (every app gets its shared tasks)

#: The databases the transactional tests run on, each with the django_db mark it needs.
POSTGRES_SKIP = pytest.mark.skip(reason="PostgreSQL is not answering on 127.0.0.1:5432")
DATABASES = [
    pytest.param(
        "default", marks=pytest.mark.django_db(transaction=True, databases=["default"]), id="sqlite"
    ),
    pytest.param(
        "pg",
        marks=(
            pytest.mark.django_db(transaction=True, databases=["pg"])
            if test_settings.postgres
            else POSTGRES_SKIP
        ),
        id="postgresql",
    ),
]


def django_app(namespace: str = "CELERIAC", **settings: Any) -> Celeriac:
    """An app configured as a Django project's ``proj/celery.py`` configures it, on an in-memory
    broker and backend of its own; the default app from now on."""
    app = Celeriac("djtests")
    app.config_from_object("django.conf:settings", namespace=namespace)
    url = f"memory://{uuid.uuid4().hex}"
    app.conf.update({"broker_url": url, "result_backend": url, **settings})
    app.set_default()
    return app


@pytest.fixture
def dj_app() -> Iterator[Celeriac]:
    app = django_app()
    yield app
    app.close()


@pytest.fixture
def dj_worker(dj_app: Celeriac) -> Iterator[Worker]:
    """A real worker of ``dj_app`` (threads pool) in a thread of the test process."""
    with worker_thread(dj_app, concurrency=2, pool="threads") as worker:
        yield worker


@pytest.fixture
def published() -> Iterator[list[str]]:
    """The ids of the task messages published during the test, in order."""
    ids: list[str] = []

    def record(headers: dict[str, Any], **kwargs: Any) -> None:
        ids.append(headers["id"])

    signals.after_task_publish.connect(record, weak=False)
    yield ids
    signals.after_task_publish.disconnect(record)
