"""The pytest plugin as a user sees it: their test files, run by pytest with the plugin loaded.

Each test writes a small project (tests, a conftest, sometimes a package) into ``pytester``'s
directory and runs pytest on it in this process.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from celeriac.contrib import pytest as plugin

PLUGIN = "celeriac.contrib.pytest"

Run = Callable[..., pytest.RunResult]
ROOT = Path(__file__).resolve().parents[2]


def test_tasks_run_on_a_real_worker_loop_not_eagerly(
    pytester: pytest.Pytester, run_user_tests: Run
) -> None:
    pytester.makepyfile(
        test_user="""
        import threading

        import pytest


        def test_round_trip(celeriac_app, celeriac_worker):
            @celeriac_app.task
            def add(x: int, y: int) -> int:
                return x + y

            @celeriac_app.task
            def where() -> str:
                return threading.current_thread().name

            @celeriac_app.task
            def boom() -> None:
                raise KeyError("gone")

            assert celeriac_worker.ready.is_set()
            assert add.delay(2, 3).get(timeout=10) == 5
            assert where.delay().get(timeout=10) != threading.current_thread().name
            with pytest.raises(KeyError, match="gone"):
                boom.delay().get(timeout=10)


        def test_what_eager_mode_lets_through_fails(celeriac_app, celeriac_worker):
            @celeriac_app.task
            def echo(value):
                return value

            with pytest.raises(Exception):  # a real send serializes: an object() cannot go
                echo.delay(object())
            assert echo.delay({"a": (1, 2)}).get(timeout=10) == {"a": [1, 2]}


        def test_each_test_has_an_app_of_its_own(celeriac_app):
            assert celeriac_app.broker_url.startswith("memory://")
            assert "tests.add" not in celeriac_app.tasks
        """
    )
    result = run_user_tests()
    result.assert_outcomes(passed=3)


def test_config_marker_and_worker_options_shape_the_app_and_worker(
    pytester: pytest.Pytester, run_user_tests: Run
) -> None:
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture(scope="session")
        def celeriac_config():
            return {"task_default_queue": "jobs", "result_expires": 60}


        @pytest.fixture
        def celeriac_worker_options():
            return {"concurrency": 1}
        """
    )
    pytester.makepyfile(
        test_user="""
        import pytest


        def test_config(celeriac_app, celeriac_worker):
            assert celeriac_app.conf.task_default_queue == "jobs"
            assert [q.name for q in celeriac_worker.queues] == ["jobs"]
            assert celeriac_worker.concurrency == 1

            @celeriac_app.task
            def double(x: int) -> int:
                return 2 * x

            assert double.delay(21).get(timeout=10) == 42


        @pytest.mark.celeriac(task_default_queue="urgent")
        def test_marker_wins(celeriac_app, celeriac_worker):
            assert celeriac_app.conf.task_default_queue == "urgent"
            assert celeriac_app.conf.result_expires == 60
            assert [q.name for q in celeriac_worker.queues] == ["urgent"]


        @pytest.mark.celeriac("urgent")
        def test_marker_takes_keywords(celeriac_app):
            pass
        """
    )
    result = run_user_tests("--strict-markers")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.celeriac takes settings as keywords only*"])


def test_sent_tasks_records_what_the_test_sent(
    pytester: pytest.Pytester, run_user_tests: Run
) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest


        @pytest.fixture
        def add(celeriac_app):
            @celeriac_app.task(name="proj.add")
            def add(x: int, y: int) -> int:
                return x + y

            return add


        def test_sends(add, sent_tasks):
            add.delay(2, 2)
            add.apply_async((1, 1), countdown=30, priority=5)
            assert sent_tasks.called_with("proj.add", args=(2, 2))
            assert sent_tasks.called_with(add, args=[1, 1], priority=5)
            assert not sent_tasks.called_with("proj.add", args=(2, 2), priority=5)
            assert not sent_tasks.called_with("proj.add", args=(3, 3))
            assert sent_tasks.count(add) == 2 and len(sent_tasks) == 2
            assert sent_tasks.names == ["proj.add", "proj.add"]
            assert sent_tasks[0].headers["eta"] is None and sent_tasks[1].option("eta")
            sent_tasks.clear()
            assert sent_tasks.count() == 0
            add.delay(x=5, y=6)
            assert sent_tasks.called_with("proj.add", kwargs={"x": 5, "y": 6})
            with pytest.raises(TypeError, match="no send option 'colour'"):
                sent_tasks.called_with(add, colour="red")


        def test_starts_empty_and_sees_sends_from_worker_threads(
            celeriac_app, celeriac_worker, add, sent_tasks
        ):
            assert len(sent_tasks) == 0

            @celeriac_app.task(name="proj.fan_out")
            def fan_out(n: int) -> int:
                for i in range(n):
                    add.delay(i, i)
                return n

            assert fan_out.delay(3).get(timeout=10) == 3
            assert sent_tasks.count("proj.fan_out") == 1
            assert sent_tasks.count(add) == 3
            assert sent_tasks.called_with(add, args=(2, 2))
            parent = sent_tasks.filter("proj.fan_out")[0].id
            assert {s.option("parent_id") for s in sent_tasks.filter(add)} == {parent}


        def test_a_failed_assertion_shows_what_was_sent(add, sent_tasks):
            add.delay(1, 1)
            assert sent_tasks.called_with("proj.add", args=(2, 2))
        """
    )
    result = run_user_tests()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*<SentTasks: proj.add(1, 1)>*"])


def write_project(pytester: pytest.Pytester) -> None:
    """A user's package with its app at module level, as ``celeriac worker -A`` imports it."""
    pytester.mkpydir("proj")
    pytester.makepyfile(
        **{
            "proj/celery": """
            import os

            from celeriac import Celeriac

            app = Celeriac("proj")


            @app.task
            def add(x: int, y: int) -> int:
                return x + y


            @app.task
            def pid() -> int:
                return os.getpid()
            """
        }
    )


def test_a_worker_process_runs_the_projects_tasks(
    pytester: pytest.Pytester, run_user_tests: Run
) -> None:
    write_project(pytester)
    pytester.makeconftest(
        """
        import pytest

        from proj.celery import app


        @pytest.fixture
        def celeriac_app(tmp_path):
            url = f"sqlite:///{tmp_path}/broker.db"
            app.conf.update(broker_url=url, result_backend=url)
            yield app
            app.close()
        """
    )
    pytester.makepyfile(
        test_user="""
        import os

        from proj.celery import add, pid


        def test_round_trip(celeriac_worker_process):
            assert add.delay(2, 2).get(timeout=20) == 4
            assert pid.delay().get(timeout=20) == celeriac_worker_process.pid != os.getpid()
            assert "ready: pool=threads" in celeriac_worker_process.output()
        """
    )
    run_user_tests().assert_outcomes(passed=1)


def test_a_worker_process_that_cannot_work_fails_saying_why(
    pytester: pytest.Pytester, run_user_tests: Run
) -> None:
    pytester.makepyfile(
        test_memory="""
        def test_memory_broker(celeriac_worker_process):
            pass
        """,
        test_local="""
        import pytest

        from celeriac import Celeriac


        @pytest.fixture
        def celeriac_app(tmp_path):
            return Celeriac("local", broker=f"sqlite:///{tmp_path}/b.db")


        def test_app_made_in_a_fixture(celeriac_worker_process):
            pass
        """,
        test_options="""
        import pytest


        @pytest.fixture
        def celeriac_worker_options():
            return {"prefetch_multiplier": 4}


        def test_thread_options(celeriac_worker_process):
            pass
        """,
    )
    result = run_user_tests()
    result.assert_outcomes(errors=3)
    output = result.stdout.str()
    assert "celeriac_worker_process: a worker process cannot reach the in-memory broker" in output
    assert "(broker_url='sqlite:///path/to/broker.db')" in output
    assert "is not a module-level name of an importable module" in output
    assert "celeriac_worker_options ['prefetch_multiplier'] do not apply" in output
    assert "Traceback" not in output and "During handling" not in output


def fixture_names(source: str) -> set[str]:
    """Names of the functions decorated as fixtures in a module's source."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) == "pytest.fixture":
                    names.add(node.name)
    return names


def test_the_plugins_fixtures_do_not_shadow_this_suites() -> None:
    """Once installed, the plugin loads in this suite too: none of its fixtures may share a
    name with one of ours (ours would win silently, or theirs would)."""
    ours = set()
    for conftest in (ROOT / "tests").rglob("conftest.py"):
        ours |= fixture_names(conftest.read_text())
    theirs = fixture_names(Path(plugin.__file__).read_text())
    assert theirs == {
        "celeriac_config",
        "celeriac_worker_options",
        "celeriac_app",
        "celeriac_worker",
        "celeriac_worker_process",
        "sent_tasks",
    }
    assert ours, "no fixtures found in this suite's conftest files"
    assert not theirs & ours


def test_an_entry_point_loads_the_plugin_with_no_conftest(pytester: pytest.Pytester) -> None:
    """What installing celeriac does, played by a distribution of our own on the path: pytest
    loads the plugin by its ``pytest11`` entry point, with no ``-p`` and no conftest, under the
    name ``celeriac`` (so ``-p no:celeriac`` turns it off)."""
    site = pytester.mkdir("site")
    dist = site / "celeriac_plugin_probe-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: celeriac-plugin-probe\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\nceleriac = {PLUGIN}\n")
    pytester.syspathinsert(site)
    pytester.makepyfile(test_user="def test_it(celeriac_app, sent_tasks): pass")
    quiet = [
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:django",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    ]
    pytester.runpytest(*quiet).assert_outcomes(passed=1)
    pytester.runpytest(*quiet, "-p", "no:celeriac").assert_outcomes(errors=1)


def test_pyproject_declares_the_entry_point_and_it_is_installed() -> None:
    """The real registration: pyproject.toml's ``pytest11`` entry point, in the installed
    metadata too (``make install`` ran since)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project.get("entry-points", {}).get("pytest11", {})
    if declared.get("celeriac") != PLUGIN:
        pytest.xfail("pyproject.toml does not declare the pytest11 entry point yet")
    installed = [ep for ep in entry_points(group="pytest11") if ep.value == PLUGIN]
    assert [ep.name for ep in installed] == ["celeriac"], "run `make install` again"
