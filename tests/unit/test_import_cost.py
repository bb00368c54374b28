"""What importing celeriac costs: nothing a process does not use is imported.

Every prefork child, every producer process and every ``celeriac`` command imports celeriac
before it does anything, so client libraries (redis-py, aio-pika), the entry-point machinery
(:mod:`importlib.metadata`), optional codecs and click are imported only by the process that
uses them. Each check runs in a fresh interpreter, since this test process has imported
everything already. The copies that make this possible (the worker's task options, the
packages each built-in transport needs) are checked against their originals here too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac import Celeriac, ImproperlyConfigured
from celeriac.app.base import WORKER_TASK_OPTIONS
from celeriac.protocol import compression, serializers
from celeriac.protocol.compression import BZ2, Codec, CompressionRegistry
from celeriac.protocol.serializers import Serializer, SerializerRegistry
from celeriac.transports.registry import BUILTIN, REQUIRES

#: Never imported by building an app and declaring its tasks (the optional packages and the
#: modules that use them), whatever the broker URL's scheme. The worker module itself is
#: (``celeriac.Worker`` is a plain re-export: the design has no lazy names in ``__init__``),
#: but it must not pull any of these in.
NOT_FOR_AN_APP = (
    "redis",
    "aio_pika",
    "aiormq",
    "pamqp",
    "importlib.metadata",
    "celeriac.transports.redis",
    "celeriac.transports.amqp",
    "celeriac.results.redis",
    "celeriac.results.rpc",
    "msgpack",
    "yaml",
    "zstandard",
    "bz2",
    "lzma",
    "click",
)


def imported_after(code: str, cwd: Path) -> set[str]:
    """The modules of ``NOT_FOR_AN_APP`` that a fresh interpreter holds after running ``code``."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps(sorted(m for m in {NOT_FOR_AN_APP!r} if m in sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=cwd
    )
    found: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return set(found)


@pytest.mark.parametrize(
    "broker",
    [None, "redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//", "memory://"],
)
def test_an_app_and_its_tasks_import_no_client_library(broker: str | None, tmp_path: Path) -> None:
    code = f"""
        import celeriac

        app = celeriac.Celeriac("shop", broker={broker!r})

        @app.task(bind=True, max_retries=3, acks_late=True, time_limit=30, queue="io")
        def fetch(self, url: str) -> str:
            return url

        @app.task
        async def resize(image_id: int) -> int:
            return image_id

        assert fetch.name in app.tasks and resize.is_async
        """
    assert imported_after(code, tmp_path) == set()


def test_the_cli_entry_module_imports_neither_click_nor_a_client_library(tmp_path: Path) -> None:
    """A prefork child of ``celeriac ... worker`` imports ``celeriac.cli.main`` again (spawn
    re-runs the parent's main script); it needs neither click nor the commands."""
    assert imported_after("import celeriac.cli.main", tmp_path) == set()


def test_help_lists_every_command_and_the_group_is_where_it_was(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from celeriac.cli import group, main

    with pytest.raises(SystemExit) as info:
        main.main(["--help"])
    assert info.value.code == 0
    listed = capsys.readouterr().out.split("Commands:")[1].split()
    assert {"call", "dlq", "purge", "result", "worker"} <= set(listed)
    assert main.cli is group.cli


def test_worker_is_still_importable_from_the_package() -> None:
    import celeriac
    from celeriac.worker.worker import Worker

    assert celeriac.Worker is Worker
    assert "Worker" in dir(celeriac)


def test_the_worker_task_options_copy_matches_the_worker() -> None:
    from celeriac.worker.consumer import TASK_OPTIONS as RATE_LIMIT_OPTIONS
    from celeriac.worker.pools.base import TASK_OPTIONS as TIME_LIMIT_OPTIONS

    assert {**TIME_LIMIT_OPTIONS, **RATE_LIMIT_OPTIONS} == WORKER_TASK_OPTIONS


def test_a_rate_limit_is_still_checked_when_declared_and_at_start_up() -> None:
    app = Celeriac(broker="memory://")
    with pytest.raises(ImproperlyConfigured, match="task option 'rate_limit'"):
        app.task(rate_limit="ten per second")
    with pytest.raises(ImproperlyConfigured, match="setting 'task_default_rate_limit'"):
        Celeriac(broker="memory://", task_default_rate_limit="fast")


def test_a_missing_client_library_still_fails_at_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # what a missing package looks like
    with pytest.raises(ImproperlyConfigured) as info:
        Celeriac(broker="redis://127.0.0.1:6379/0")
    assert str(info.value) == (
        "broker_url scheme 'redis' needs the module 'redis' (pip install \"celeriac[redis]\")"
    )


def test_an_unknown_scheme_still_fails_at_start_up_listing_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"broker_url 'bogus://x': unknown scheme"):
        Celeriac(broker="bogus://x")


#: Run in a fresh interpreter: the packages ``blocked`` look uninstalled, as to an import (the
#: path finder does not find them) so to ``importlib.util.find_spec``.
WITHOUT = """
import sys
from importlib.machinery import PathFinder

class Without(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in blocked:
            return None
        return PathFinder.find_spec(fullname, path, target)

sys.meta_path[sys.meta_path.index(PathFinder)] = Without
"""


def run_without(blocked: tuple[str, ...], code: str, cwd: Path) -> str:
    script = f"blocked = {blocked!r}\n" + WITHOUT + textwrap.dedent(code)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=cwd
    )
    return out.stdout.strip()


@pytest.mark.parametrize("module", sorted(REQUIRES))
def test_each_required_package_is_imported_by_its_module(module: str, tmp_path: Path) -> None:
    code = f"""
        import importlib, json, sys
        importlib.import_module({module!r})
        print(json.dumps(sorted(sys.modules)))
        """
    imported = set(json.loads(run_without((), code, tmp_path)))
    assert set(REQUIRES[module]) <= imported


@pytest.mark.parametrize(
    ("module", "blocked"),
    [(m, (p,)) for m, packages in REQUIRES.items() for p in packages]
    + [(m, packages) for m, packages in REQUIRES.items()],
)
def test_the_start_up_check_names_what_the_import_would(
    module: str, blocked: tuple[str, ...], tmp_path: Path
) -> None:
    """``REQUIRES`` lists the packages a module imports, in its order: with some of them not
    installed, the start-up check (no import) and the import fail with the same message."""
    scheme = next(s for s, path in BUILTIN.items() if path.startswith(f"{module}:"))
    code = f"""
        import json
        from celeriac.errors import ImproperlyConfigured
        from celeriac.transports.registry import check_transport_url, transport_class
        messages = []
        for call in (check_transport_url, transport_class):
            try:
                call({scheme + "://localhost"!r})
            except ImproperlyConfigured as exc:
                messages.append(str(exc))
        print(json.dumps(messages))
        """
    out = run_without(blocked, code, tmp_path)
    messages = json.loads(out)
    assert len(messages) == 2, out
    assert messages[0] == messages[1]
    assert "needs the module" in messages[0]


def test_optional_serializers_load_when_first_asked_for() -> None:
    registry = SerializerRegistry.with_defaults()
    assert "msgpack" in registry  # installed in the test environment
    with pytest.raises(ImproperlyConfigured) as info:
        registry.get("nope")
    assert "'msgpack'" in str(info.value)
    assert "'yaml'" in str(info.value)  # an error lists every built-in, loaded or not


def test_a_serializer_registered_over_a_pending_builtin_wins() -> None:
    registry = SerializerRegistry.with_defaults()
    mine = Serializer("yaml", "application/x-yaml", "utf-8", lambda o: b"x", lambda b: b)
    registry.register("yaml", mine)
    assert registry.get("yaml") is mine
    assert registry.name_for("application/x-yaml") == "yaml"
    assert registry.loads(b"abc", "application/x-yaml", "utf-8", accept=["yaml"]) == b"abc"


def ask_together(calls: list[Callable[[], object]]) -> list[BaseException]:
    """Run ``calls`` in threads released at once; what they raised."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_that_ask_for_a_pending_builtin_together_all_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One thread imports; the others wait for it rather than find the name missing (the
    builders are slowed down so that the others ask while the import runs)."""
    yaml_serializer, zstd_codecs = serializers._yaml_serializer, compression._zstd_codecs

    def slow_yaml() -> Serializer:
        time.sleep(0.05)
        return yaml_serializer()

    def slow_zstd() -> tuple[Codec, Codec]:
        time.sleep(0.05)
        return zstd_codecs()

    monkeypatch.setattr(serializers, "_yaml_serializer", slow_yaml)
    monkeypatch.setattr(compression, "_zstd_codecs", slow_zstd)
    registry = SerializerRegistry.with_defaults()
    assert ask_together([lambda: registry.get("yaml")] * 4) == []
    compressors = CompressionRegistry.with_defaults()
    assert ask_together([lambda: compressors.compress(b"x", "zstd")] * 4) == []


def test_zstd_loads_when_first_asked_for_and_errors_list_it() -> None:
    registry = CompressionRegistry.with_defaults()
    assert "zstd" in registry  # installed in the test environment
    with pytest.raises(ImproperlyConfigured, match="'zstd'"):
        CompressionRegistry.with_defaults().compress(b"x", "snappy")
    assert registry.decompress(registry.compress(b"x" * 100, "bz2")[1], BZ2) == b"x" * 100
