"""The mixed fleet as a session fixture, once per broker (RabbitMQ, then Redis in kombu's layout):
one Celery 5.7 worker and one celeriac worker (prefork, two children each, task events on),
both consuming the ``mixed`` queue and each its own; started once (both at once) because every
test here needs them, and stopped at the end with everything they left on the broker.

Celery, kombu and Flower are test dependencies: a missing one fails the tests under
``CELERIAC_REQUIRE_SERVICES=1`` (as CI runs) and skips them otherwise, as a missing server does.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# the shared integration helpers (worker_harness) live beside this package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from conftest import REQUIRE_SERVICES, require_service
from interop.fleet import Fleet


def require_package(name: str) -> None:
    """Import ``name`` (a test dependency) or fail/skip saying which is missing."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        message = f"{name} is a test dependency and does not import: {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (CELERIAC_REQUIRE_SERVICES=1)")
        pytest.skip(message)


BROKERS = ["amqp", "redis"]


@pytest.fixture(scope="session", params=BROKERS)
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    kind: str = request.param
    for package in ("celery", "kombu"):
        require_package(package)
    if kind == "amqp":
        require_service("RabbitMQ", 5672)
    require_service("Redis", 6379)
    made = Fleet(tmp_path_factory.mktemp(f"fleet-{kind}"), kind)
    try:
        made.open()
        names = made.names
        workers = [
            made.start_celeriac_worker(
                names.celeriac_node, [names.celeriac_queue, names.mixed_queue], wait=False
            ),
            made.start_celery_worker(
                names.celery_node, [names.celery_queue, names.mixed_queue], wait=False
            ),
        ]
        for worker in workers:
            worker.wait_ready()
        yield made
    finally:
        made.close()
