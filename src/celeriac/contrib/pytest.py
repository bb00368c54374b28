"""pytest fixtures for testing tasks with a real worker loop instead of eager mode.

Eager mode (``task_always_eager``) runs a task inside ``delay()``: no serialization, no routing,
no worker, no result backend, so it passes tests that a real deployment fails (Celery's #4247).
These fixtures give each test a real app, broker and worker, cheap enough for every test:

``celeriac_app``
    an app on a fresh in-memory broker and result backend of its own, with the settings of
    ``celeriac_config`` and of the test's ``@pytest.mark.celeriac(**settings)``. It becomes the
    default app for the test. Override it to test your project's own app.
``celeriac_config``
    the settings of ``celeriac_app`` (a dict; override it, at any scope, in a conftest.py).
``celeriac_worker``
    a real worker (the threads pool) consuming ``celeriac_app``'s queues, in a thread of the test
    process: started before the test, stopped (warm) after it.
``celeriac_worker_options``
    the keyword arguments of that worker (``concurrency``, ``pool``, ``queues``...).
``celeriac_worker_process``
    ``celeriac worker`` in a child process, for tests that need a process boundary. The app must
    be a module-level name of an importable module, on a broker other processes reach (SQLite:
    ``{"broker_url": "sqlite:///.../broker.db"}``); see :func:`celeriac.testing.worker_process`.
``sent_tasks``
    a :class:`celeriac.testing.SentTasks` recording the task messages the test publishes:
    ``assert sent_tasks.called_with("proj.add", args=(2, 2))``, ``sent_tasks.count(add)``,
    ``sent_tasks.clear()``.

A test with a worker in a thread::

    def test_add(celeriac_app, celeriac_worker, sent_tasks):
        @celeriac_app.task
        def add(x: int, y: int) -> int:
            return x + y

        assert add.delay(2, 2).get(timeout=10) == 4
        assert sent_tasks.called_with(add, args=(2, 2))

Your project's own app, with a worker process, from a ``conftest.py``::

    @pytest.fixture
    def celeriac_app(tmp_path):
        from proj.celery import app

        url = f"sqlite:///{tmp_path}/broker.db"
        app.conf.update(broker_url=url, result_backend=url)
        yield app
        app.close()

    def test_add(celeriac_worker_process):
        from proj.celery import add

        assert add.delay(2, 2).get(timeout=10) == 4

The plugin is registered by celeriac's ``pytest11`` entry point (``-p no:celeriac`` turns it off).
Every name starts with ``celeriac_`` (or is ``sent_tasks``) so that it does not shadow a project's
own fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.errors import CeleriacError
from celeriac.testing import SentTasks, WorkerProcess, worker_process, worker_thread
from celeriac.worker.worker import Worker

#: The worker options a worker process takes (as ``celeriac worker`` flags).
PROCESS_OPTIONS = frozenset({"app_spec", "pool", "concurrency", "queues", "hostname"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "celeriac(**settings): settings for this test's celeriac_app, over celeriac_config",
    )


@pytest.fixture
def celeriac_config() -> dict[str, Any]:
    """Settings of ``celeriac_app`` (override this fixture); the broker and backend default to
    fresh in-memory ones."""
    return {}


@pytest.fixture
def celeriac_worker_options() -> dict[str, Any]:
    """Keyword arguments of the worker ``celeriac_worker`` runs (override this fixture)."""
    return {}


@pytest.fixture
def celeriac_app(
    request: pytest.FixtureRequest, celeriac_config: dict[str, Any]
) -> Iterator[Celeriac]:
    """An app on a fresh in-memory broker and backend, with ``celeriac_config`` and the test's
    ``celeriac`` marker applied; closed after the test."""
    url = f"memory://{uuid.uuid4().hex}"
    settings: dict[str, Any] = {"broker_url": url, "result_backend": url, **celeriac_config}
    marker = request.node.get_closest_marker("celeriac")
    if marker is not None:
        if marker.args:
            pytest.fail("@pytest.mark.celeriac takes settings as keywords only", pytrace=False)
        settings.update(marker.kwargs)
    app = Celeriac("celeriac_tests", **settings)
    yield app
    app.close()


@pytest.fixture
def celeriac_worker(
    celeriac_app: Celeriac, celeriac_worker_options: dict[str, Any]
) -> Iterator[Worker]:
    """A real worker for ``celeriac_app`` in a thread, consuming until the test ends."""
    with worker_thread(celeriac_app, **celeriac_worker_options) as worker:
        yield worker


@pytest.fixture
def celeriac_worker_process(
    celeriac_app: Celeriac, celeriac_worker_options: dict[str, Any]
) -> Iterator[WorkerProcess]:
    """``celeriac worker`` for ``celeriac_app`` in a child process, stopped after the test."""
    unknown = sorted(set(celeriac_worker_options) - PROCESS_OPTIONS)
    if unknown:
        pytest.fail(
            f"celeriac_worker_options {unknown} do not apply to a worker process "
            f"(it takes {sorted(PROCESS_OPTIONS)})",
            pytrace=False,
        )
    running = worker_process(celeriac_app, **celeriac_worker_options)
    try:
        process = running.__enter__()
    except CeleriacError as exc:
        error = str(exc)
    else:
        try:
            yield process
        finally:
            running.__exit__(None, None, None)
        return
    pytest.fail(f"celeriac_worker_process: {error}", pytrace=False)  # outside the except: no chain


@pytest.fixture
def sent_tasks() -> Iterator[SentTasks]:
    """The task messages this test publishes (from any thread), recorded as they are sent."""
    with SentTasks() as sent:
        yield sent
