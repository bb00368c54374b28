"""Finding an app and its tasks as Celery's ``-A`` does: ``proj`` or its ``celery``/``celeriac``
submodule, ``include=`` and the ``imports`` setting, ``autodiscover_tasks`` over packages or a
callable. Each test writes a small project into a temporary directory and loads it by name."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.app.loader import find_app
from celeriac.errors import AppNotFound, ImproperlyConfigured
from celeriac.testing import memory_app, worker_thread


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A fresh importable package name in a temporary directory on ``sys.path``."""
    name = f"proj_{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_dash_A_finds_the_app_in_the_packages_celery_module(project: tuple[Path, str]) -> None:
    root, name = project
    write(root, f"{name}/__init__.py", "")
    write(
        root,
        f"{name}/celery.py",
        f"""
        from celeriac import Celeriac
        app = Celeriac("{name}", broker="memory://{name}", include=["{name}.tasks"])
        """,
    )
    write(
        root,
        f"{name}/tasks.py",
        f"""
        from {name}.celery import app

        @app.task
        def add(x, y):
            return x + y
        """,
    )
    app = find_app(name)
    assert app.main == name
    assert f"{name}.tasks.add" in app.tasks  # include= was imported with the app


def test_dash_A_prefers_a_celeriac_submodule_and_the_package_attribute(
    project: tuple[Path, str],
) -> None:
    root, name = project
    write(
        root,
        f"{name}/__init__.py",
        """
        from celeriac import Celeriac
        celery = Celeriac("attribute", broker="memory://attr")
        """,
    )
    write(root, f"{name}/celeriac.py", "raise RuntimeError('not imported: the attribute wins')")
    assert find_app(name).main == "attribute"


def test_imports_setting_and_a_missing_module(project: tuple[Path, str]) -> None:
    root, name = project
    write(root, f"{name}/__init__.py", "")
    write(
        root,
        f"{name}/app.py",
        f"""
        from celeriac import Celeriac
        app = Celeriac("imports", broker="memory://imports", imports=["{name}.jobs"])
        """,
    )
    write(
        root,
        f"{name}/jobs.py",
        f"""
        from {name}.app import app

        @app.task(name="jobs.ping")
        def ping():
            return "pong"
        """,
    )
    app = find_app(f"{name}.app")
    assert "jobs.ping" in app.tasks
    app.conf.update(imports=[f"{name}.nope"])
    with pytest.raises(ImproperlyConfigured, match=rf"'imports'.*{name}\.nope"):
        app.import_default_modules()


def test_autodiscover_tasks_packages_and_callable(project: tuple[Path, str]) -> None:
    root, name = project
    write(root, f"{name}/__init__.py", "")
    for sub in ("billing", "emails", "static"):
        write(root, f"{name}/{sub}/__init__.py", "")
    for sub in ("billing", "emails"):
        write(
            root,
            f"{name}/{sub}/tasks.py",
            f"""
            from celeriac import shared_task

            @shared_task(name="{sub}.run")
            def run():
                return "{sub}"
            """,
        )
    write(
        root,
        f"{name}/celery.py",
        f"""
        from celeriac import Celeriac
        app = Celeriac("disc", broker="memory://disc")
        app.autodiscover_tasks(["{name}.billing", "{name}.static"])
        app.autodiscover_tasks(lambda: ["{name}.emails"])
        """,
    )
    app = find_app(f"{name}.celery")
    assert {"billing.run", "emails.run"} <= set(app.tasks)  # static has no tasks.py: skipped
    with pytest.raises(ImproperlyConfigured, match="no package named"):
        app.autodiscover_tasks([f"{name}.missing"], force=True)


def test_bad_specs_name_what_is_wrong(project: tuple[Path, str]) -> None:
    root, name = project
    write(root, f"{name}.py", "x = 1\n")
    with pytest.raises(AppNotFound, match="no Celeriac app found"):
        find_app(name)
    with pytest.raises(AppNotFound, match="has no attribute 'nope'"):
        find_app(f"{name}:nope")
    with pytest.raises(AppNotFound, match="cannot import"):
        find_app(f"{name}_absent")


def test_autodiscover_without_packages_reads_djangos_installed_apps(
    project: tuple[Path, str],
) -> None:
    """Celery's Django pattern: ``app.autodiscover_tasks()`` finds ``tasks.py`` in every
    installed app. Run in a fresh interpreter: Django's settings are process-wide."""
    root, name = project
    write(root, f"{name}/__init__.py", "")
    write(root, f"{name}/shop/__init__.py", "")
    write(
        root,
        f"{name}/shop/tasks.py",
        """
        from celeriac import shared_task

        @shared_task(name="shop.checkout")
        def checkout():
            return "ok"
        """,
    )
    code = textwrap.dedent(
        f"""
        import django
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["{name}.shop"])
        django.setup()
        from celeriac import Celeriac
        app = Celeriac("dj", broker="memory://dj")
        app.autodiscover_tasks()
        assert "shop.checkout" not in app.tasks  # lazy: found when a worker loads the app
        app.import_default_modules()
        print(sorted(t for t in app.tasks if t.startswith("shop.")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['shop.checkout']"


def test_a_worker_made_in_code_imports_the_include_modules(project: tuple[Path, str]) -> None:
    root, name = project
    write(root, f"{name}/__init__.py", "")
    write(
        root,
        f"{name}/jobs.py",
        """
        from celeriac import shared_task

        @shared_task(name="jobs.triple")
        def triple(x):
            return 3 * x
        """,
    )
    app = memory_app("in-code", include=[f"{name}.jobs"])
    assert "jobs.triple" not in app.tasks
    with worker_thread(app):
        assert app.send_task("jobs.triple", (5,)).get(timeout=10) == 15
    assert "jobs.triple" in app.tasks
