"""Imported by the prefork pool's fork server when it starts (see :mod:`.starter`), never by the
worker or a child: its import is its whole job.

It makes the server ignore SIGTERM: a signal sent to the worker's whole process group (Ctrl-C,
systemd's default ``KillMode``, ``timeout``) must not end the server while its children run,
since the worker learns of each child's exit through the server (a server that died would make
every busy child look lost). The server leaves when the worker does (the standard library
watches a pipe for that), so it needs no signal.

Then it imports the app (``module:attr``) and the child's own modules, so that every child forked
from the server starts with them loaded. The app and the worker's ``sys.path`` come through the
environment, as JSON: Python 3.11's fork server takes the worker's path as an argument but does
not apply it before it imports what it preloads, so an app found through a path the worker added
(``--workdir``, a test runner's) would not be found. A failure here is swallowed: the child
imports the app again and reports why it cannot (``StartFailed``), as a spawned child does.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from celeriac.worker.pools.starter import PRELOAD_ENV

signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _preload(spec: str) -> None:
    try:
        import celeriac.worker.pools.child  # noqa: F401  (what every child runs)
        from celeriac.app.loader import find_app

        find_app(spec)
    except BaseException:  # the child reports it: see the docstring
        pass


def _main(text: str | None) -> None:
    try:
        given = json.loads(text) if text else {}
    except ValueError:
        return
    sys.path[:] = [str(entry) for entry in given.get("sys_path", sys.path)]
    if given.get("app"):
        _preload(str(given["app"]))


_main(os.environ.get(PRELOAD_ENV))
