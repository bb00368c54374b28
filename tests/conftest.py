"""Shared fixtures. Tests that need a server call :func:`require_service`: it skips when the
server is missing, or fails under ``CELERIAC_REQUIRE_SERVICES=1`` (as CI runs)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac import task as task_module
from celeriac.context import reset_default_app
from celeriac.protocol.message import Message, task_message
from celeriac.testing import memory_app

REQUIRE_SERVICES = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"

# The suite's own rules (no skip for want of a server under REQUIRE_SERVICES, no forked child
# back in pytest) and the scan of every log line it writes for the secrets it uses.
pytest_plugins = ["suite_rules", "_secrets_scan"]


# Directories whose modules share one session-scoped fixture (a Celery fleet, a Flower): run by
# one xdist worker, so the fixture is built once, not once per worker.
ONE_WORKER_DIRECTORIES = ("interop",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (``make unit``), each module's tests stay on one
    worker: module-scoped fixtures (a worker process, a dashboard) are built once, and tests of a
    module that share broker names never run at the same time. Runs before xdist's own hook,
    which turns the group into the node id's ``@group`` suffix. tests/interop (a Celery fleet
    and Flower on timers) is marked serial: ``make unit`` runs it alone, after the rest."""
    for item in items:
        if "interop" in item.path.parts:
            item.add_marker(pytest.mark.serial)
    if not config.pluginmanager.hasplugin("xdist") or config.getoption("dist", "no") != "loadgroup":
        return
    root = config.rootpath / "tests"
    for item in items:
        relative = item.path.relative_to(root) if item.path.is_relative_to(root) else item.path
        parts = relative.parts
        group = parts[0] if parts and parts[0] in ONE_WORKER_DIRECTORIES else str(relative)
        item.add_marker(pytest.mark.xdist_group(group))


def service_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN MATCH): a test's own keys on the shared Redis."""
    if not service_answers(6379):
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def json_task_message(
    label: str,
    task: str = "tests.t",
    *,
    unique: bool = True,
    priority: int | None = None,
    headers: dict[str, Any] | None = None,
) -> Message:
    """A small task message (JSON body ``[[], {}, {}]``) whose id is ``label``, with a random
    suffix unless ``unique`` is False: what broker tests publish, tell apart by id and count."""
    return task_message(
        task=task,
        task_id=f"{label}-{uuid.uuid4().hex[:8]}" if unique else label,
        body=b"[[], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        priority=priority,
        extra_headers=headers,
    )


def require_service(name: str, port: int) -> None:
    if service_answers(port):
        return
    message = f"{name} is not answering on 127.0.0.1:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CELERIAC_REQUIRE_SERVICES=1)")
    pytest.skip(message)


#: The @shared_task declarations of a Django project's task modules (tests/djangoproject),
#: imported when that folder is collected: kept apart so that they join only its tests' apps.
PROJECT_SHARED: dict[str, list[Any]] = {}
PROJECT_DIRECTORIES = ("djangoproject",)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Take the shared tasks that a project folder's modules declared at collection out of
    the list every app joins (see :func:`_fresh_default_app`, which lends them back)."""
    for folder in PROJECT_DIRECTORIES:
        prefix = str(session.config.rootpath / "tests" / folder)
        mine = [
            entry
            for entry in task_module._shared
            if (getattr(getattr(entry[0], "fn", None), "__code__", None) is not None)
            and entry[0].fn.__code__.co_filename.startswith(prefix)
        ]
        PROJECT_SHARED.setdefault(folder, []).extend(mine)
        task_module._shared[:] = [e for e in task_module._shared if e not in mine]


@pytest.fixture(autouse=True)
def _fresh_default_app(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with no default app chosen (``set_default()`` in one test must not
    decide which app another test's ``AsyncResult(id)`` reads) and ends with the shared tasks
    it found; a project folder's tests get that project's shared tasks back for their run."""
    reset_default_app()
    shared = list(task_module._shared)
    parts = request.node.path.parts
    for folder, entries in PROJECT_SHARED.items():
        if folder in parts:
            task_module._shared.extend(entries)
    yield
    reset_default_app()
    # a @shared_task declared by a test joins every app created after it: forget it, so that
    # later tests' apps hold only their own tasks
    task_module._shared[:] = shared


@pytest.fixture
def app() -> Iterator[Celeriac]:
    """An app on a fresh in-memory broker and backend."""
    application = memory_app("tests")
    yield application
    application.close()


class LoadsOnFirstMiss(dict[str, Any]):
    """A registry table whose first lookup of ``key`` lets ``load`` run before it answers: the
    interleaving where another thread finishes loading a lazy built-in (a codec) between two
    lookups of the same thread."""

    def __init__(self, table: dict[str, Any], key: str, load: Callable[[], None]) -> None:
        super().__init__(table)
        self.key, self.load, self.fired = key, load, False

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key, default)
        if key == self.key and not self.fired:
            self.fired = True
            self.load()
        return found
