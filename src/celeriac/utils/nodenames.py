"""Node names (``w1@host``) and the ``%`` abbreviations of names, pid files and log files.

The same abbreviations as Celery's, so a systemd unit or an init script keeps its command line:

========  ======================================================================================
``%h``    the host: in ``-n``, this machine's full hostname; in a file name, the node's host part
``%n``    the name: in ``-n``, the hostname's first label; in a file name, the node's name part
          (``w1`` for ``w1@example.com``)
``%d``    the domain: what follows the first ``.`` of the host
``%p``    in a file name, the whole node name
``%i``    the process index: ``0`` in the worker's main process, ``1``..``N`` in prefork child N
``%I``    the same with a dash, empty in the main process: ``-1``..``-N``, so that
          ``--logfile=%n%I.log`` gives ``w1.log`` for the worker and ``w1-1.log`` for child 1
``%%``    a literal ``%``
========  ======================================================================================

An unknown abbreviation is an error naming it (a ``ValueError``; the command line shows it as a
usage error), never passed through silently.
"""

from __future__ import annotations

import functools
import re
import socket

__all__ = [
    "DEFAULT_NAME",
    "default_nodename",
    "gethostname",
    "host_format",
    "node_format",
    "nodesplit",
]

#: The name part of a node name given without one (``-n example.com``), and of the default.
DEFAULT_NAME = "celeriac"
_ABBREVIATION = re.compile(r"%([%\w])")


@functools.cache
def gethostname() -> str:
    """This machine's hostname, read once (it is part of every default node name)."""
    return socket.gethostname()


def nodesplit(nodename: str) -> tuple[str | None, str]:
    """``"w1@host"`` -> ``("w1", "host")``; a name without ``@`` is a host: ``(None, name)``."""
    name, sep, host = nodename.partition("@")
    return (name, host) if sep else (None, nodename)


def default_nodename(value: str | None) -> str:
    """The node name for ``-n value``: ``name@host``, either half defaulting (Celery's rule:
    a value without ``@`` is the host, the name being :data:`DEFAULT_NAME`)."""
    name, host = nodesplit(value or "")
    return f"{name or DEFAULT_NAME}@{host or gethostname()}"


def _index(index: int | None, dash: bool) -> str:
    if not index:
        return "" if dash else "0"
    return f"-{index}" if dash else str(index)


def _expand(template: str, keys: dict[str, str]) -> str:
    def resolve(match: re.Match[str]) -> str:
        key = match.group(1)
        try:
            return keys[key]
        except KeyError:
            known = " ".join(f"%{k}" for k in keys if k != "%")
            raise ValueError(
                f"unknown abbreviation %{key} in {template!r} (known: {known} and %%)"
            ) from None

    return _ABBREVIATION.sub(resolve, template)


def host_format(
    template: str, host: str | None = None, name: str | None = None, index: int | None = None
) -> str:
    """Expand ``%h %n %d %i %I %%`` with ``host`` (default: this machine's) and ``name``
    (default: the host's first label); ``index``: the prefork child's, ``None`` in the worker."""
    if "%" not in template:
        return template
    host = host or gethostname()
    first, _, domain = host.partition(".")
    keys = {
        "h": host,
        "n": name or first,
        "d": domain,
        "i": _index(index, dash=False),
        "I": _index(index, dash=True),
        "%": "%",
    }
    return _expand(template, keys)


def node_format(template: str, nodename: str, index: int | None = None) -> str:
    """Expand a pid file, log file or state file name for the node ``nodename``: ``%n`` is its
    name part, ``%h`` its host part, ``%d`` that host's domain, ``%p`` the whole node name."""
    if "%" not in template:
        return template
    name, host = nodesplit(nodename)
    domain = host.partition(".")[2]
    keys = {
        "h": host,
        "n": name or DEFAULT_NAME,
        "d": domain,
        "p": nodename,
        "i": _index(index, dash=False),
        "I": _index(index, dash=True),
        "%": "%",
    }
    return _expand(template, keys)
