"""The suite's own rules, held while it runs (a pytest plugin that tests/conftest.py loads).

Two rules a reviewer would otherwise have to check by reading every test:

* Under ``CELERIAC_REQUIRE_SERVICES=1`` (as CI runs) nothing is skipped for want of something
  the machine should have: a server, a server's tool (``rabbitmqctl``, ``redis-server``), a test
  dependency. A skip there is turned into a failure that quotes its reason, unless the reason is
  one of :data:`BY_DESIGN`: a feature a broker lacks on purpose, which no install would change.
  So a new skip of the wrong kind fails in CI whatever words it uses, and a new skip of the right
  kind is added to that list, where a reviewer sees it.
* A forked child never runs pytest's code: if a test's (or a fixture's) child comes back out of
  the test, not having called ``os._exit``, it is ended here, before it can report a result
  or run the next test in a copy of the parent's session.

:func:`require_tool` is :func:`conftest.require_service` for a program a test runs.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Generator

import pytest

from conftest import REQUIRE_SERVICES

#: Skips that stay skips under ``CELERIAC_REQUIRE_SERVICES=1``: each a pattern of the reason
#: (matched from its start) and why no machine set-up could make the test run.
BY_DESIGN: tuple[tuple[str, str], ...] = (
    (r"no leases on this broker", "RabbitMQ holds a delivery until it is settled"),
    (r"kombu's layout: ", "a behaviour kombu's Redis layout defines otherwise"),
    (r"this store's state lives in one process", "an in-process beat store"),
    (r"AMQP gives a queue's depth, not its head's age", "no message age over AMQP"),
    (r"kombu's lists keep no time per message", "no message age in kombu's layout"),
    (r"\S+ failed \(its own test says why\)", "the page's own test fails, not this total"),
    (r"cannot reset the peak RSS", "a kernel without /proc/self/clear_refs"),
    (r"Huey's bench venv is not built", "an optional benchmark peer, not a test dependency"),
)
_BY_DESIGN = re.compile("|".join(f"(?:{pattern})" for pattern, _ in BY_DESIGN))


def require_tool(name: str, why: str) -> str:
    """The path of the program ``name`` a test runs (``why``: what for), or skip saying it is
    missing; under ``CELERIAC_REQUIRE_SERVICES=1`` fail instead (.ci/run installs the tools)."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not installed ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CELERIAC_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def skip_reason(longrepr: object) -> str:
    """The reason of a skipped report (pytest keeps ``(path, line, "Skipped: reason")``)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def skip_allowed(reason: str) -> bool:
    """Whether a skip with this reason may stay a skip when services are required."""
    return _BY_DESIGN.match(reason) is not None


def _refused(reason: str) -> str:
    return (
        f"skipped under CELERIAC_REQUIRE_SERVICES=1: {reason}\n"
        "A test must not skip for want of a server, a tool or a test dependency where the "
        "services are required (CI installs them). If this skip is by design (a feature a broker "
        "lacks), add its reason to BY_DESIGN in tests/suite_rules.py."
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report.longrepr)
        if not skip_allowed(reason):
            report.outcome = "failed"
            report.longrepr = _refused(reason)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module skipped as a whole (``importorskip`` at its top) fails the same way."""
    report = yield
    if REQUIRE_SERVICES and report.skipped:
        reason = skip_reason(report.longrepr)
        if not skip_allowed(reason):
            report.outcome = "failed"
            report.longrepr = _refused(reason)
    return report


#: The process that runs the tests (each xdist worker imports this module in its own process).
_SESSION_PID = os.getpid()


def _leave_if_forked(item: pytest.Item) -> None:
    """End a forked child that came back into pytest (its test forgot ``os._exit`` on some
    path, or the child raised): it must not report, tear down or run anything of the parent's."""
    if os.getpid() != _SESSION_PID:
        os.write(2, f"\n{item.nodeid}: a forked child came back into pytest; ended\n".encode())
        os._exit(70)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        _leave_if_forked(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        _leave_if_forked(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        _leave_if_forked(item)
