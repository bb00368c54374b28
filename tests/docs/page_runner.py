"""Run the code blocks of one documentation page, as a reader would, in this process.

``python page_runner.py PAGE.md`` is started by ``test_snippets.py`` in an empty temporary
directory (its cwd), so a page starts from nothing: no ``celeriac.db``, no modules of its own.
Blocks run in page order:

* python: executed in one namespace for the whole page (``__name__ == "__main__"``, as a
  script), top-level ``await`` allowed; a block titled ``*.py`` (``title="tasks.py"``) is
  written to that file instead, and every such module the page did not import by its end is
  imported then, so it runs too. ``<!-- snippet: worker -->`` first starts a real worker in a
  thread for the namespace's ``app`` (the threads pool; ``app=NAME``, or ``app=tasks.app``
  for one in a module the page wrote; ``pool=...``, ``queues=a,b``, ``hostname=w1@host``),
  kept until the page ends (a second ``worker`` block stops it and starts another, for new
  queues);
* shell: checked by ``bash -n``; every ``celeriac`` command in it is parsed by celeriac's own
  command line (click builds its contexts, options converted and checked; ``inspect`` and
  ``control`` commands looked up; ``multi`` run as ``multi show``, its dry run, in this
  process); ``run`` blocks are also run by bash, ``background`` blocks started, and stopped
  when the page ends (SIGTERM, which must end them with status 0);
* yaml, ini (systemd units), toml and json: parsed; a titled one is written to its file too.

The result is one JSON line on stdout: counts per kind and the skips with their reasons; any
failure is a traceback naming the block and exit status 1.
"""

from __future__ import annotations

import ast
import asyncio
import configparser
import contextlib
import importlib
import inspect
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import traceback
from collections import Counter
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import Block, blocks_of, celeriac_args, shell_commands

BACKGROUND_STOP = 30.0
READY_WAIT = 60.0
RUN_TIMEOUT = 60.0


class SnippetError(AssertionError):
    pass


class Background:
    """A command a page starts in the background, its output kept for failures."""

    def __init__(self, block: Block, env: dict[str, str]) -> None:
        self.block = block
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {block.text.strip()}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.seen = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stream: IO[str] | None = self.process.stdout
        assert stream is not None
        for line in stream:
            with self.seen:
                self.lines.append(line)
                self.seen.notify_all()

    def wait_for(self, pattern: str) -> None:
        deadline = time.monotonic() + READY_WAIT
        regex = re.compile(pattern)
        with self.seen:
            while not any(regex.search(line) for line in self.lines):
                if self.process.poll() is not None:
                    raise SnippetError(f"{self.block.where}: exited early:\n{self.output()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SnippetError(f"{self.block.where}: no {pattern!r}:\n{self.output()}")
                self.seen.wait(min(left, 0.2))

    def output(self) -> str:
        return "".join(self.lines[-60:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            status = self.process.wait(BACKGROUND_STOP)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise SnippetError(f"{self.block.where}: still running after SIGTERM") from None
        self.reader.join(5)
        if status != 0:
            raise SnippetError(
                f"{self.block.where}: exit status {status} after SIGTERM:\n{self.output()}"
            )


class Page:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.cwd = Path.cwd()
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__file__": "<docs>"}
        self.counts: Counter[str] = Counter()
        self.skips: list[dict[str, str]] = []
        self.written: list[Path] = []
        self.stack = contextlib.ExitStack()
        self.backgrounds: list[Background] = []
        self.worker: contextlib.ExitStack | None = None
        self.redis_prefixes: set[str] = set()
        self.amqp_queues: set[str] = set()
        self.timings: list[tuple[float, str]] = []
        self.services = set(filter(None, os.environ.get("SNIPPET_SERVICES", "").split(",")))
        self.require = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"
        self.env = dict(os.environ)
        given = self.env.get("PYTHONPATH")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.cwd), given]))
        # a sample's pytest run loads what it names, not every plugin of the test environment
        self.env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        bindir = str(Path(sys.executable).parent)
        self.env["PATH"] = bindir + os.pathsep + self.env.get("PATH", "")

    # -- the page -----------------------------------------------------------------------------
    def run(self) -> None:
        sys.path.insert(0, str(self.cwd))
        try:
            for block in blocks_of(self.path):
                self.block(block)
            self.import_written()
        finally:
            self.close()

    def close(self) -> None:
        errors: list[str] = []
        for background in reversed(self.backgrounds):
            try:
                background.stop()
            except SnippetError as exc:
                errors.append(str(exc))
        self.stack.close()
        self.clean_servers()
        close = getattr(self.namespace.get("app"), "close", None)
        if callable(close):
            close()
        if errors:
            raise SnippetError("\n".join(errors))

    def clean_servers(self) -> None:
        """Delete what the page's samples left on the shared servers: the Redis keys under the
        prefixes its blocks name (``redis-keys=shop:``), the RabbitMQ queues (``amqp-queues=``,
        in the vhost ``/``)."""
        if self.redis_prefixes:
            import redis

            client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
            try:
                for prefix in self.redis_prefixes:
                    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                    if keys:
                        client.delete(*keys)
            finally:
                client.close()
        if self.amqp_queues:
            import aio_pika

            async def delete() -> None:
                connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
                async with connection:
                    for name in self.amqp_queues:
                        channel = await connection.channel()
                        with contextlib.suppress(Exception):
                            await channel.queue_delete(name)

            asyncio.run(delete())

    def block(self, block: Block) -> None:
        marker = block.marker
        if "skip" in marker:
            reason = marker.get("reason", "")
            if not reason:
                raise SnippetError(f"{block.where}: a skip must say why (reason=...)")
            self.skips.append({"where": block.where, "reason": reason})
            self.counts["skipped"] += 1
            return
        needs = set(filter(None, marker.get("needs", "").split(",")))
        missing = needs - self.services
        if missing:
            reason = f"needs {', '.join(sorted(missing))}, not answering"
            if self.require:
                raise SnippetError(f"{block.where}: {reason} (CELERIAC_REQUIRE_SERVICES=1)")
            self.skips.append({"where": block.where, "reason": reason})
            self.counts["skipped"] += 1
            return
        self.redis_prefixes.update(filter(None, marker.get("redis-keys", "").split(",")))
        self.amqp_queues.update(filter(None, marker.get("amqp-queues", "").split(",")))
        kind = block.kind
        began = time.monotonic()
        try:
            getattr(self, f"do_{kind}")(block)
        except SnippetError:
            raise
        except BaseException as exc:
            text = "".join(traceback.format_exception(exc))
            raise SnippetError(f"{block.where} ({kind}) failed:\n{block.text}\n{text}") from None
        self.counts[kind] += 1
        self.timings.append((round(time.monotonic() - began, 2), block.where))

    def write(self, block: Block) -> bool:
        title = block.title
        if not title or title.startswith("/") or ".." in Path(title).parts:
            return False
        target = self.cwd / title
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        self.written.append(target)
        return True

    # -- kinds --------------------------------------------------------------------------------
    def do_unknown(self, block: Block) -> None:
        raise SnippetError(
            f"{block.where}: language {block.language!r} is not one the snippet test knows"
            " (tests/docs/doc_blocks.py KINDS): name a known one, or mark it skip with a reason"
        )

    def do_text(self, block: Block) -> None:
        """Not code: nothing to run."""

    def do_python(self, block: Block) -> None:
        if block.title and block.title.endswith(".py"):
            compile(block.text, block.title, "exec", dont_inherit=True)
            self.write(block)
            return
        if "worker" in block.marker:
            self.start_worker(block)
        code = compile(
            block.text,
            block.where,
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        if code.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(code, self.namespace))  # the page's own code
        else:
            exec(code, self.namespace)

    def start_worker(self, block: Block) -> None:
        from celeriac.testing import worker_thread

        name = block.marker.get("app") or "app"
        if "." in name:  # module.attr: an app the page wrote to a file (tasks.app)
            module, _, attr = name.rpartition(".")
            app = getattr(importlib.import_module(module), attr, None)
        else:
            app = self.namespace.get(name)
        if app is None:
            raise SnippetError(f"{block.where}: a worker for {name!r}, which is not defined yet")
        if self.worker is not None:  # a worker reads its queues when it starts: a new one
            self.worker.close()
        options: dict[str, Any] = {"pool": block.marker.get("pool") or "threads"}
        if block.marker.get("queues"):
            options["queues"] = block.marker["queues"].split(",")
        if block.marker.get("hostname"):
            options["hostname"] = block.marker["hostname"]
        self.worker = contextlib.ExitStack()
        self.stack.callback(self.worker.close)
        self.worker.enter_context(worker_thread(app, timeout=30, **options))

    def do_shell(self, block: Block) -> None:
        checked = subprocess.run(
            ["bash", "-n"], input=block.text, text=True, capture_output=True, check=False
        )
        if checked.returncode:
            raise SnippetError(f"{block.where}: bash -n: {checked.stderr.strip()}")
        for words in shell_commands(block.text):
            args = celeriac_args(words)
            if args is not None:
                parse_cli(args, block)
        self.write(block)
        if "run" in block.marker:
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block.text],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
            if done.returncode != int(block.marker.get("status") or 0):
                raise SnippetError(
                    f"{block.where}: exit status {done.returncode}:\n{block.text}\n"
                    f"{done.stdout}\n{done.stderr}"
                )
            expected = block.marker.get("expect")
            if expected and not re.search(expected, done.stdout + done.stderr):
                raise SnippetError(
                    f"{block.where}: no {expected!r} in:\n{done.stdout}\n{done.stderr}"
                )
        elif "background" in block.marker:
            background = Background(block, self.env)
            self.backgrounds.append(background)
            ready = block.marker.get("ready")
            if ready:
                background.wait_for(ready)

    def do_yaml(self, block: Block) -> None:
        import yaml

        list(yaml.safe_load_all(block.text))
        self.write(block)

    def do_ini(self, block: Block) -> None:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(block.text, source=block.where)
        if not parser.sections():
            raise SnippetError(f"{block.where}: no [section] in an ini block")
        self.write(block)

    def do_toml(self, block: Block) -> None:
        tomllib.loads(block.text)
        self.write(block)

    def do_json(self, block: Block) -> None:
        json.loads(block.text)
        self.write(block)

    # -- the end of a page --------------------------------------------------------------------
    def import_written(self) -> None:
        """Import each module the page wrote and did not import, so that every line runs."""
        for path in self.written:
            if path.suffix != ".py":
                continue
            parts = path.relative_to(self.cwd).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            module = ".".join(parts)
            if module and module not in sys.modules:
                try:
                    importlib.import_module(module)
                except BaseException as exc:
                    text = "".join(traceback.format_exception(exc))
                    where = f"{path.name}, imported at the page's end"
                    raise SnippetError(f"{where}:\n{text}") from None


def parse_cli(args: list[str], block: Block) -> None:
    """Parse one command line with celeriac's click group, as far as a real run would before
    calling the command: every level's options converted and checked. ``multi`` goes through
    its dry run; ``inspect``/``control`` commands are looked up in the command table."""
    import click

    from celeriac.cli.group import cli
    from celeriac.control.meta import COMMANDS

    def fail(message: str) -> SnippetError:
        return SnippetError(f"{block.where}: celeriac {' '.join(args)}: {message}")

    if "--help" in args or "-h" in args or "--version" in args:
        return
    try:
        ctx = cli.make_context("celeriac", list(args))
        command: click.Command = cli
        while isinstance(command, click.Group):
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                if command.invoke_without_command:
                    break
                raise fail("no command")
            name, sub, rest = command.resolve_command(ctx, rest)
            if sub is None or name is None:
                raise fail("unknown command")
            if name == "multi":
                multi_dry_run(args, rest, block)
                return
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub
            if name in ("inspect", "control"):
                wanted = str(ctx.params.get("name"))
                info = COMMANDS.get(wanted)
                if info is None or info.kind != name:
                    raise fail(f"{wanted!r} is not an {name} command")
                given = len(ctx.params.get("args") or ())
                if given < info.required:
                    raise fail(f"{wanted} needs {info.required} argument(s): {info.signature}")
    except click.exceptions.Exit:
        return
    except click.ClickException as exc:
        raise fail(exc.format_message()) from None


def multi_dry_run(args: list[str], rest: list[str], block: Block) -> None:
    """``celeriac multi start ...`` run as ``multi show ...``: the node list and options
    parsed and expanded by multi itself, nothing started."""
    if not rest:
        raise SnippetError(f"{block.where}: multi without an action")
    action, *words = rest
    if action in ("start", "restart"):
        action = "show"
    elif action in ("stop", "stopwait", "kill"):
        action = "names"
        words = [w for w in words if not w.startswith("-")]
    head = args[: len(args) - len(rest)]
    from celeriac.cli.main import main as celeriac_main

    output = io.StringIO()
    status: object = 0
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            celeriac_main([*head, action, *words])
        except SystemExit as exc:
            status = exc.code
    if status not in (0, None):
        raise SnippetError(
            f"{block.where}: celeriac {' '.join(args)} (as {action}): {output.getvalue()}"
        )


def main() -> int:
    page = Page(Path(sys.argv[1]))
    try:
        page.run()
    except SnippetError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    slowest = sorted(page.timings, reverse=True)[:3]
    print(json.dumps({"counts": dict(page.counts), "skips": page.skips, "slowest": slowest}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    os._exit(status)  # threads a sample left running (a daemon worker) must not hold the exit
