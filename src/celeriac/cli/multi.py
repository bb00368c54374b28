"""``celeriac multi``: start, stop and restart detached workers, as init scripts run Celery's.

::

    celeriac multi start w1 w2 -A proj -l INFO --pidfile=/var/run/celeriac/%n.pid \\
        --logfile=/var/log/celeriac/%n%I.log
    celeriac multi stopwait w1 w2 --pidfile=/var/run/celeriac/%n.pid

Each node is ``celeriac worker --detach -n NODE`` with the options given (the node list and
per-node options are read as ``celery multi`` reads them: :mod:`celeriac.cli.multi_nodes`).
Nodes are found again by their pid files, so ``stop`` must be given the same ``--pidfile`` as
``start``. ``start`` waits for each worker to consume (or to fail, whose error it shows), so its
status says whether every node runs. ``stop`` sends SIGTERM (a warm shutdown: running tasks
finish; ``-KILL``, ``-9``... for another signal), ``stopwait`` also waits until the workers
have exited, ``restart`` is ``stopwait`` then ``start`` node by node, ``kill`` sends SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable

import click

from celeriac.cli.main import AppContext, package_version
from celeriac.cli.multi_nodes import Node, ParsedArgs, find_signal, nodes_from, parse_args
from celeriac.utils.daemon import Pidfile, process_alive

USAGE = """\
celeriac multi start <node1 node2 nodeN|N> [worker options]
celeriac multi stop <n1 n2 nN|N> [-SIG (default: -TERM)] [--pidfile=...]
celeriac multi stopwait <n1 n2 nN|N> [-SIG] [--pidfile=...]
celeriac multi restart <n1 n2 nN|N> [-SIG] [worker options]
celeriac multi kill <n1 n2 nN|N> [--pidfile=...]
celeriac multi show <n1 n2 nN|N> [worker options]
celeriac multi get <node> <n1 n2 nN|N> [worker options]
celeriac multi names <n1 n2 nN|N>
celeriac multi expand <template> <n1 n2 nN|N>

Worker options apply to every node; -o:SEL value (--opt:SEL=value) to some: SEL is a node's
name, its position (1), a list (1,3) or, with a node count, a range (1-3). --pidfile defaults to
%n.pid and --logfile to %n%I.log in the current directory. --quiet, --verbose, --nosplash,
--no-color are multi's own."""
_RESERVED = {"--quiet": "quiet", "-q": "quiet", "--verbose": "verbose", "--nosplash": "nosplash"}
#: How often a wait for a node to exit looks again where the kernel cannot tell (no pidfd).
_POLL = 0.05


class Multi:
    """The actions, printing as ``celery multi`` prints."""

    def __init__(self, quiet: bool, verbose: bool) -> None:
        self.quiet = quiet
        self.verbose = verbose

    def note(self, text: str, newline: bool = True) -> None:
        if not self.quiet:
            click.echo(text, nl=newline)

    # -- starting -------------------------------------------------------------------------------
    def start(self, nodes: list[Node], parsed: ParsedArgs) -> int:
        self.note("> Starting nodes...")
        statuses = [self.start_node(node) for node in nodes]  # every node, even after a failure
        return int(any(statuses))

    def start_node(self, node: Node) -> int:
        self.note(f"\t> {node.name}: ", newline=False)
        for path in (node.pidfile, node.logfile):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        command = [node.executable, *node.argv()]
        if self.verbose:
            self.note(f"\n\t  {' '.join(command)}\n\t  ", newline=False)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        self.note("OK" if done.returncode == 0 else "FAILED")
        if done.returncode != 0 or self.verbose:
            for line in (done.stderr + done.stdout).splitlines():
                click.echo(f"\t  {line}", err=True)
        return done.returncode

    # -- stopping -------------------------------------------------------------------------------
    def running(self, nodes: list[Node], on_down: Callable[[Node], object]) -> dict[Node, int]:
        """The nodes whose pid file names a live process, with that pid."""
        found: dict[Node, int] = {}
        for node in nodes:
            pid = Pidfile(node.pidfile).read_pid()
            if pid is not None and process_alive(pid):
                found[node] = pid
            else:
                on_down(node)
        return found

    def down(self, node: Node) -> None:
        self.note(f"> {node.name}: DOWN")

    def stop(self, nodes: list[Node], parsed: ParsedArgs, wait: bool = False) -> int:
        sig = find_signal(parsed)
        running = self.running(nodes, self.down)
        if not running:
            return 0
        self.note("> Stopping nodes...")
        for node, pid in running.items():
            self.note(f"\t> {node.name}: {signal.Signals(sig).name} -> {pid}")
            _signal(pid, sig)
        if wait:
            pids = ", ".join(str(p) for p in running.values())
            self.note(
                f"> Waiting for {len(running)} node{'s' if len(running) > 1 else ''} -> {pids}..."
            )
            for node, pid in running.items():
                wait_exited(pid)
                self.note(f"\t> {node.name}: OK")
        return 0

    def stopwait(self, nodes: list[Node], parsed: ParsedArgs) -> int:
        return self.stop(nodes, parsed, wait=True)

    def restart(self, nodes: list[Node], parsed: ParsedArgs) -> int:
        sig = find_signal(parsed)
        failed = 0
        running = self.running(nodes, lambda node: None)
        if running:
            self.note("> Stopping nodes...")
        for node, pid in running.items():
            self.note(f"\t> {node.name}: {signal.Signals(sig).name} -> {pid}")
            _signal(pid, sig)
        for node in nodes:
            if node in running:
                wait_exited(running[node])
            self.note(f"> Restarting node {node.name}: ", newline=False)
            failed |= bool(self.start_node(node))
        return failed

    def kill(self, nodes: list[Node], parsed: ParsedArgs) -> int:
        for node, pid in self.running(nodes, self.down).items():
            self.note(f"Sending SIGKILL to node {node.name} ({pid})")
            _signal(pid, signal.SIGKILL)
        return 0

    # -- looking --------------------------------------------------------------------------------
    def show(self, nodes: list[Node], parsed: ParsedArgs) -> int:
        for node in nodes:
            click.echo(" ".join([node.executable, *node.argv()]))
        return 0

    def names(self, nodes: list[Node], parsed: ParsedArgs) -> int:
        click.echo("\n".join(node.name for node in nodes))
        return 0


ACTIONS: dict[str, Callable[[Multi, list[Node], ParsedArgs], int]] = {
    "start": Multi.start,
    "stop": Multi.stop,
    "stopwait": Multi.stopwait,
    "stop_verify": Multi.stopwait,
    "restart": Multi.restart,
    "kill": Multi.kill,
    "show": Multi.show,
    "names": Multi.names,
}


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it left meanwhile: what we wanted
        os.kill(pid, sig)


def wait_exited(pid: int) -> None:
    """Wait until ``pid`` (not our child: a daemon) has exited: on Linux a pidfd becomes
    readable when it does, elsewhere look again every few milliseconds."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while process_alive(pid):
            time.sleep(_POLL)
        return
    try:
        while process_alive(pid):  # a zombie is readable too, and is gone for us
            select.select([fd], [], [], 1.0)
    finally:
        os.close(fd)


def _own_words(ctx: AppContext, words: list[str]) -> list[str]:
    """multi's words as typed: click drops a ``--``, which multi must see to refuse it."""
    argv = ctx.argv
    if argv is None or "--" not in argv or "multi" not in argv:
        return words
    return argv[argv.index("multi") + 1 :]


@click.command(
    "multi",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def command(ctx: AppContext, /, words: tuple[str, ...]) -> int:
    """Start, stop and restart detached workers (celeriac multi help: the details)."""
    args = _own_words(ctx, list(words))
    flags = dict.fromkeys(_RESERVED.values(), False)
    for word, name in _RESERVED.items():
        flags[name] = flags[name] or word in args
    args = [a for a in args if a not in _RESERVED and a != "--no-color"]
    if not args or args[0] in ("help", "--help", "-h"):
        click.echo(f"{__doc__}\n{USAGE}" if args else USAGE)
        return 0
    action, rest = args[0], args[1:]
    wanted = None
    if action in ("get", "expand"):
        if not rest:
            raise click.UsageError(f"multi {action} needs an argument first\n\n{USAGE}")
        wanted, rest = rest[0], rest[1:]
    elif action not in ACTIONS:
        raise click.UsageError(f"unknown multi command {action!r}\n\n{USAGE}")
    parsed = parse_args(rest)
    if parsed.passthrough:
        raise click.UsageError(
            "settings after '--' are not read by celeriac workers: set CELERIAC_<SETTING> "
            "environment variables instead"
        )
    for option, value in (("-A", ctx.spec), ("-b", ctx.broker), ("--result-backend", ctx.backend)):
        aliases = {"-A": ("-A", "--app"), "-b": ("-b", "--broker")}.get(option, (option,))
        if value and not any(a in parsed.options for a in aliases):
            parsed.options = {option: value, **parsed.options}
    try:
        nodes = nodes_from(parsed)
        if not nodes:
            raise ValueError("name the nodes (w1 w2 ...) or give their number")
        for node in nodes:  # a bad %x in a file name fails here, before any node starts
            node.argv()
            _ = node.pidfile, node.logfile
        if wanted is not None and action == "expand":
            click.echo("\n".join(node.expand(wanted) for node in nodes))
            return 0
    except ValueError as exc:
        raise click.UsageError(f"{exc}\n\n{USAGE}") from None
    if action == "get":
        found = [node for node in nodes if node.name == wanted]
        if not found:
            return 1
        click.echo(" ".join(found[0].argv()))
        return 0
    tool = Multi(quiet=flags["quiet"], verbose=flags["verbose"])
    if not (flags["nosplash"] or action in ("show", "names")):
        tool.note(f"celeriac multi v{package_version()}")
    return ACTIONS[action](tool, nodes, parsed)
