"""``celeriac multi``'s command line: Celery's node list, options and per-node options.

Read exactly as ``celery multi`` reads it, so init scripts and systemd units keep their lines:

* positional words are node names (``w1 w2``, ``w1@example.com``, ``w1@%h``), or one number
  ``N`` for nodes ``celeriac1`` .. ``celeriacN`` (``--range-prefix`` changes the name);
* ``--opt=value`` and ``-o value`` are worker options given to every node (a short option takes
  the next word as its value unless that starts with ``-``; a long option's value follows
  ``=``); ``-A``/``-b``/``--result-backend``/``--workdir`` go before ``worker``;
* ``-o:SEL value`` / ``--opt:SEL=value`` apply to some nodes only: ``SEL`` is a node's name, its
  position (``1``), a list (``1,3``) or, with a node count, a range (``1-3``);
* ``--hostname``/``-n`` is the host part of the node names (default: this machine's),
  ``--prefix``/``--suffix`` surround the names;
* file names are expanded per node before they reach the worker: ``%n`` (and ``%N``) the
  node's name, ``%h`` the whole node name, ``%d`` its host; ``%i``/``%I`` are left for the worker
  (the process index). ``--pidfile`` defaults to ``%n.pid``, ``--logfile`` to ``%n%I.log``, in
  the current directory (``celery multi`` documents that, though its code uses
  ``/var/run/celery`` and ``/var/log/celery``).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass, field

from celeriac.utils.nodenames import gethostname, host_format, node_format, nodesplit

__all__ = ["GLOBAL_OPTIONS", "Node", "ParsedArgs", "find_signal", "nodes_from", "parse_args"]

#: Options of the ``celeriac`` group, placed before ``worker`` in each node's command.
GLOBAL_OPTIONS = ("-A", "--app", "-b", "--broker", "--result-backend", "--workdir")
RANGE_PREFIX = "celeriac"
DEFAULT_PIDFILE = "%n.pid"
DEFAULT_LOGFILE = "%n%I.log"


@dataclass
class ParsedArgs:
    """Celery's ``NamespacedOptionParser`` result."""

    values: list[str] = field(default_factory=list)
    options: dict[str, str | None] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: Everything after a ``--``.
    passthrough: list[str] = field(default_factory=list)
    #: The words as given, for :func:`find_signal`.
    args: list[str] = field(default_factory=list)


def parse_args(args: list[str]) -> ParsedArgs:
    parsed = ParsedArgs(args=list(args))
    words = [a for a in args if a]
    pos = 0
    while pos < len(words):
        word = words[pos]
        if word == "--":
            parsed.passthrough = words[pos + 1 :]
            break
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            _add(parsed, "--", name, value if eq else None)
        elif word.startswith("-") and len(word) > 1:
            value = None
            takes_value = not _is_signal_option(word)  # stop -KILL w1: w1 is a node
            if takes_value and pos + 1 < len(words) and not words[pos + 1].startswith("-"):
                value = words[pos + 1]
                pos += 1
            _add(parsed, "-", word[1:], value)
        else:
            parsed.values.append(word)
        pos += 1
    return parsed


def _add(parsed: ParsedArgs, prefix: str, name: str, value: str | None) -> None:
    dest = parsed.options
    if ":" in name:
        name, namespace = name.split(":", 1)
        dest = parsed.namespaces.setdefault(namespace, {})
    dest[prefix + name] = value


def find_signal(parsed: ParsedArgs, default: int = signal.SIGTERM) -> int:
    """``stop``'s ``-SIG``: ``-KILL``, ``-SIGKILL``, ``-9`` (the last one given wins)."""
    for word in reversed(parsed.args):
        if not word.startswith("-") or word.startswith("--"):
            continue
        if word[1:].isdigit():
            return int(word[1:])
        name = word[1:].upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    return default


def _is_signal_option(option: str) -> bool:
    """``-KILL``, ``-9``: ``stop``'s signal, not a worker option."""
    if option.startswith("--"):
        return False
    name = option[1:].upper()
    return name.isdigit() or (name if name.startswith("SIG") else f"SIG{name}") in _SIGNALS


_SIGNALS = frozenset(signal.Signals.__members__)


@dataclass(eq=False)
class Node:
    """One worker of the cluster: its node name, its options and how to reach it."""

    name: str
    shortname: str
    host: str
    options: dict[str, str | None]
    passthrough: list[str]

    def expand(self, value: str) -> str:
        """Celery's multi expansion (``%n``, ``%N``, ``%h``, ``%d``, ``%p``); ``%i``, ``%I`` and
        a literal ``%%`` are kept for the worker, which expands the value again."""
        return _multi_expand(value, self)

    def option(self, *names: str) -> str | None:
        for name in names:
            if name in self.options:
                return self.options[name]
        return None

    @property
    def pidfile(self) -> str:
        """The pid file as the worker will write it (absolute, from this directory)."""
        template = self.option("--pidfile", "-p") or DEFAULT_PIDFILE
        path = node_format(self.expand(os.path.expanduser(template)), self.name)
        return os.path.abspath(path)

    @property
    def logfile(self) -> str:
        template = self.option("--logfile", "-f") or DEFAULT_LOGFILE
        return os.path.abspath(node_format(self.expand(os.path.expanduser(template)), self.name))

    @property
    def executable(self) -> str:
        return self.option("--executable") or sys.executable

    def argv(self) -> list[str]:
        """The command that starts this node, detached (without the interpreter)."""
        before: list[str] = []
        after: list[str] = []
        options = dict(self.options)
        options.setdefault("--pidfile", DEFAULT_PIDFILE)
        if "-f" not in options:
            options.setdefault("--logfile", DEFAULT_LOGFILE)
        if "-p" in options:  # celery multi's short name; the worker has only --pidfile
            options["--pidfile"] = options.pop("-p")
        for option, value in options.items():
            expanded = None if value is None else self.expand(value)
            if option in ("--pidfile", "--logfile", "-f", "--workdir") and expanded:
                expanded = os.path.expanduser(expanded)
            words = _format_option(option, expanded)
            (before if option in GLOBAL_OPTIONS else after).extend(words)
        return ["-m", "celeriac", *before, "worker", "--detach", *after, *self.passthrough]


_ABBREVIATION = re.compile(r"%([%\w])")


def _multi_expand(value: str, node: Node) -> str:
    keys = {"n": node.shortname, "N": node.shortname, "h": node.name, "d": node.host}
    keys |= {"p": node.name, "i": "%i", "I": "%I", "%": "%%"}

    def resolve(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in keys:
            raise ValueError(f"unknown abbreviation %{key} in {value!r}")
        return keys[key]

    return _ABBREVIATION.sub(resolve, value)


def _format_option(option: str, value: str | None) -> list[str]:
    if value is None:
        return [option]
    if option.startswith("--"):
        return [f"{option}={value}"]
    return [option, value]


def _select(namespace: str, ranges: bool) -> list[str]:
    """``1,3`` -> ``["1", "3"]``; with a node count, ``1-3`` -> ``["1", "2", "3"]``."""
    selected: list[str] = []
    for part in namespace.split(","):
        start, dash, stop = part.partition("-")
        if ranges and dash and start.isdigit() and stop.isdigit():
            selected.extend(str(n) for n in range(int(start), int(stop) + 1))
        else:
            selected.append(part)
    return selected


def nodes_from(parsed: ParsedArgs) -> list[Node]:
    """The nodes the parsed words name, each with its merged options (see the module doc)."""
    options = {k: v for k, v in parsed.options.items() if not _is_signal_option(k)}
    given_hosts = [options.pop(option, None) for option in ("--hostname", "-n")]
    host = next((h for h in given_hosts if h), None) or gethostname()
    prefix = options.pop("--prefix", None) or ""
    suffix = options.pop("--suffix", None) or host
    suffix = "" if suffix in ('""', "''") else suffix
    range_prefix = options.pop("--range-prefix", None) or RANGE_PREFIX
    names = list(parsed.values)
    ranges = len(names) == 1 and names[0].isdigit()
    if ranges:
        names, prefix = [str(n) for n in range(1, int(names[0]) + 1)], range_prefix
    namespaces: dict[str, dict[str, str | None]] = {}
    for namespace, values in parsed.namespaces.items():
        for selected in _select(namespace, ranges):
            if selected.isdigit():
                index = int(selected) - 1
                if not 0 <= index < len(names):
                    raise ValueError(f"per-node option :{selected}: there is no node {selected}")
                selected = names[index]
            namespaces.setdefault(selected, {}).update(values)
    nodes: list[Node] = []
    for name in names:
        if "@" in name:
            nodename = host_format(name)
            shortname, node_host = nodesplit(nodename)
            shortname = shortname or name
        else:
            shortname = f"{prefix}{name}"
            nodename = host_format(f"{shortname}@{suffix}")
            node_host = nodesplit(nodename)[1]
        merged = {**options, **namespaces.get(nodename, namespaces.get(name, {}))}
        merged["-n"] = nodename
        nodes.append(Node(nodename, shortname, node_host, merged, list(parsed.passthrough)))
    return nodes
