"""Celery's documented API that needs no worker: the app and its configuration ("First Steps",
"Application", "First steps with Django" without Django), task declaration ("Tasks": names,
classes, multiple decorators), eager runs for tests ("Testing with Celery",
``task_always_eager``, ``apply``), and the module names a Celery user imports.

Each test builds its own in-memory app unless it is about the project ``proj``; nothing here
starts a worker.
"""

from __future__ import annotations

import functools
import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
from proj.celery import app as proj_app

import celeriac
from celeriac import Celeriac, EagerResult, Retry, Task, current_app
from celeriac.testing import memory_app


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = memory_app("tasks")
    yield application
    application.close()


# -- the app and its settings ----------------------------------------------------------------
def test_first_steps_app_creation_without_io() -> None:
    """first-steps-with-celery: ``Celery('tasks', broker='pyamqp://guest@localhost//')`` and
    the result backends of "Keeping Results" build without connecting."""
    for broker, backend in [
        ("pyamqp://guest@localhost//", None),
        ("pyamqp://", "rpc://"),
        ("redis://localhost:6379/0", "redis://localhost"),
    ]:
        built = Celeriac("tasks", broker=broker, backend=backend)
        assert built.conf.broker_url == broker
        built.close()


def test_configuration_in_code(app: Celeriac) -> None:
    """first-steps-with-celery, "Configuration": ``app.conf.task_serializer = 'json'`` and
    ``app.conf.update(...)`` with several settings at once."""
    app.conf.task_serializer = "json"
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # Ignore other content
        result_serializer="json",
        timezone="Europe/Oslo",
        enable_utc=True,
    )
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.timezone == "Europe/Oslo"


def test_config_from_object_by_name() -> None:
    """first-steps-with-celery: ``app.config_from_object('celeryconfig')`` (proj's module)."""
    assert proj_app.conf.accept_content == ["json"]
    assert proj_app.conf.result_backend == proj_app.conf.broker_url


def test_a_config_module_with_future_annotations(tmp_path: Path) -> None:
    """A settings module that starts with ``from __future__ import annotations`` (a common
    first line, which leaves a lower-case ``annotations`` name in the module): celeriac skips
    that name as it skips imported modules."""
    module = tmp_path / "parity_future_config.py"
    module.write_text(
        "from __future__ import annotations\n\nbroker_url = 'memory://future'\n"
        "task_serializer = 'json'\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        configured = Celeriac("future")
        configured.config_from_object("parity_future_config")
        assert configured.conf.broker_url == "memory://future"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("parity_future_config", None)


def test_task_annotations() -> None:
    """first-steps-with-celery, "Configuration": ``task_annotations = {'tasks.add':
    {'rate_limit': '10/m'}}`` sets the task's ``rate_limit``."""
    annotated = memory_app("tasks", task_annotations={"tasks.add": {"rate_limit": "10/m"}})

    @annotated.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    assert add.rate_limit == "10/m"


def test_django_style_namespace_without_django(tmp_path: Path) -> None:
    """first-steps-with-django (the parts that need no Django): settings read with
    ``namespace='CELERY'`` from a ``'module:attribute'``, ``autodiscover_tasks``, and the
    ``debug_task`` with ``bind=True, ignore_result=True``."""
    settings = SimpleNamespace(
        CELERY_BROKER_URL="memory://django-style",
        CELERY_RESULT_BACKEND="memory://django-style",
        CELERY_TASK_ALWAYS_EAGER=True,
        DEBUG=True,
    )
    django_app = Celeriac("proj")
    django_app.config_from_object(settings, namespace="CELERY")
    assert django_app.conf.broker_url == "memory://django-style"
    # a reusable app of the project, with its @shared_task in <app>/tasks.py
    package = f"parity_djapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "tasks.py").write_text(
        "from celeriac import shared_task\n\n\n@shared_task\n"
        "def add(x: int, y: int) -> int:\n    return x + y\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        django_app.autodiscover_tasks([package], force=True)
    finally:
        sys.path.remove(str(tmp_path))
        for name in (f"{package}.tasks", package):
            sys.modules.pop(name, None)
    assert django_app.tasks[f"{package}.tasks.add"].delay(2, 3).get() == 5

    @django_app.task(bind=True, ignore_result=True)
    def debug_task(self: Task[[], str]) -> str:
        print(f"Request: {self.request!r}")
        return "debugged"

    assert debug_task.delay().get() == "debugged"
    django_app.close()


# -- tasks -------------------------------------------------------------------------------------
def test_current_app_is_a_function(app: Celeriac) -> None:
    """A deliberate difference: Celery's ``current_app`` is a proxy object
    (``current_app.conf``); celeriac's is a function, ``current_app()``."""
    app.set_default()
    assert current_app() is app
    assert not hasattr(current_app, "conf")


def test_multiple_decorators(app: Celeriac) -> None:
    """ "Tasks", Basics: the task decorator applied last (first in the list)."""
    calls: list[str] = []

    def decorator(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def inner(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return fn(*args, **kwargs)

            return inner

        return wrap

    @app.task
    @decorator("decorator2")
    @decorator("decorator1")
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name.endswith(".add")
    assert add.apply((2, 2)).get() == 4
    assert calls == ["decorator2", "decorator1"]


def test_changing_the_automatic_naming_behavior() -> None:
    """ "Tasks", Changing the automatic naming behavior: a ``gen_task_name`` override."""

    class MyCelery(Celeriac):
        def gen_task_name(self, name: str, module: str) -> str:
            if module.endswith(".tasks"):
                module = module[:-6]
            return f"{module}.{name}"

    main = MyCelery("main", broker="memory://naming")

    def task_a(x: int) -> int:
        return x

    task_a.__module__ = "moduleA.tasks"
    assert main.task(task_a).name == "moduleA.task_a"


def test_task_cls_app_wide() -> None:
    """ "Tasks", App-wide usage: ``Celery('tasks', task_cls='your.module.path:DatabaseTask')``."""
    from proj.classes import Database, DatabaseTask

    wide = memory_app("tasks", task_cls="proj.classes:DatabaseTask")

    @wide.task
    def process_rows() -> int:
        return 1

    assert isinstance(process_rows, DatabaseTask)
    assert isinstance(process_rows.db, Database)
    wide.close()


def test_class_based_task_as_documented(app: Celeriac) -> None:
    """ "Tasks", Instantiation: ``NaiveAuthenticateServer`` exactly as the guide writes it."""

    class NaiveAuthenticateServer(Task):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.users = {"george": "password"}

        def run(self, username: str, password: str) -> bool:
            try:
                return self.users[username] == password
            except KeyError:
                return False

    task = app.register_task(NaiveAuthenticateServer())
    assert task.apply(("george", "password")).get() is True


def test_registry_lists_the_tasks() -> None:
    """ "Tasks", How it works: ``app.tasks`` maps every registered name to its task."""
    from proj.tasks import add

    assert proj_app.tasks["proj.tasks.add"] is add
    assert "celery.map" in proj_app.tasks


# -- eager runs: testing -------------------------------------------------------------------------
def test_task_always_eager(app: Celeriac) -> None:
    """``task_always_eager`` (configuration, and "Testing with Celery"): ``delay()`` runs the
    task here and returns an EagerResult; ``task_eager_propagates`` raises at once."""

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def fails() -> None:
        raise ValueError("eager")

    app.conf.task_always_eager = True
    result = add.delay(2, 2)
    assert isinstance(result, EagerResult)
    assert result.get() == 4
    assert result.successful()
    assert isinstance(fails.delay().get(propagate=False), ValueError)
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    with pytest.raises(ValueError, match="eager"):
        fails.delay()


def test_apply_runs_here(app: Celeriac) -> None:
    """``Task.apply()``: run locally with the worker's semantics, returning an EagerResult."""

    @app.task(bind=True)
    def add(self: Task[[int, int], int], x: int, y: int) -> int:
        assert self.request.is_eager
        return x + y

    result = add.apply((2, 2))
    assert result.get() == 4
    assert result.state == "SUCCESS"


def test_testing_guide_patches_retry(app: Celeriac) -> None:
    """ "Testing with Celery": call the task directly and patch ``send_order.retry`` to raise
    ``Retry``."""

    class OperationalError(Exception):
        pass

    class Product:
        @staticmethod
        def order(quantity: int, price: float) -> None:
            """Orders the product."""

    @app.task(bind=True)
    def send_order(self: Task[[int, float], None], quantity: int, price: float) -> None:
        try:
            Product.order(quantity, price)
        except OperationalError as exc:
            raise self.retry(countdown=60 * 5, exc=exc) from exc

    with patch.object(Product, "order") as product_order:
        send_order(3, 30.3)
        product_order.assert_called_with(3, 30.3)
    with (
        patch.object(Product, "order", side_effect=OperationalError()),
        patch.object(send_order, "retry", side_effect=Retry()),
        pytest.raises(Retry),
    ):
        send_order(3, 30.6)


def test_retry_in_a_task_called_directly_raises_the_error(app: Celeriac) -> None:
    """``Task.retry`` outside a worker: Celery raises the exception being retried."""

    class FailWhaleError(Exception):
        pass

    @app.task(bind=True)
    def send_twitter_status(self: Task[[], None]) -> None:
        try:
            raise FailWhaleError("down")
        except FailWhaleError as exc:
            raise self.retry(exc=exc) from exc

    with pytest.raises(FailWhaleError):
        send_twitter_status()


def test_connection_error_handling() -> None:
    """ "Calling Tasks", Connection Error Handling: ``except add.OperationalError`` around a
    send to a broker that cannot be reached (with retries disabled)."""
    unreachable = Celeriac("conn", broker="redis://127.0.0.1:1/0", backend="disabled")

    @unreachable.task
    def add(x: int, y: int) -> int:
        return x + y

    try:
        with pytest.raises(add.OperationalError):
            add.apply_async((2, 2), retry=False)
    finally:
        unreachable.close()


# -- the names a Celery user imports -----------------------------------------------------------
def test_module_names_map_to_celeriacs() -> None:
    """The import changes a project makes: ``celery`` -> ``celeriac``, ``celery.signals`` ->
    ``celeriac.signals``, ``celery.states`` -> ``celeriac.states``, ``celery.utils.log`` ->
    ``celeriac.utils.log``, and (deliberately renamed) ``celery.exceptions`` ->
    ``celeriac.errors``, ``celery.result`` -> ``celeriac`` (``AsyncResult``, ``GroupResult``)."""
    from celeriac.utils.log import get_logger, get_task_logger

    assert callable(get_task_logger)
    assert callable(get_logger)
    errors = importlib.import_module("celeriac.errors")
    for name in [
        "ChordError",
        "Ignore",
        "ImproperlyConfigured",
        "MaxRetriesExceededError",
        "NotRegistered",
        "Reject",
        "Retry",
        "SoftTimeLimitExceeded",
        "TaskError",
        "TaskRevokedError",
        "TimeLimitExceeded",
        "TimeoutError",
        "WorkerLostError",
        "BackendError",
    ]:
        assert hasattr(errors, name), name
    for name in ["AsyncResult", "GroupResult", "EagerResult", "signature", "maybe_signature"]:
        assert hasattr(celeriac, name), name
    states = importlib.import_module("celeriac.states")
    for name in ["PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "READY_STATES"]:
        assert hasattr(states, name), name


def test_the_rest_of_celerys_exception_and_state_names() -> None:
    """Names of ``celery.exceptions`` and ``celery.states`` that the guides use
    (``QueueNotFound`` in "Routing", ``OperationalError`` in "Calling", ``IGNORED``).
    ``WorkerShutdown`` is not provided (a deliberate difference: a task does not shut its
    worker down by raising; the README's table says what to use)."""
    errors = importlib.import_module("celeriac.errors")
    for name in ["QueueNotFound", "OperationalError", "InvalidTaskError", "Terminated"]:
        assert hasattr(errors, name), name
    assert issubclass(errors.Terminated, errors.TaskRevokedError)
    assert errors.OperationalError is errors.TransportError
    assert hasattr(importlib.import_module("celeriac.states"), "IGNORED")
