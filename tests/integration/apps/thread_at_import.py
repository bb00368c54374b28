"""The worker tests' app (:mod:`apps.sqlite_tasks`), from a module that starts a thread when it is
imported, as an app does that starts a monitoring client at import: the worker command must not
fork itself to make its fork server then (see celeriac.worker.pools.starter)."""

from __future__ import annotations

import threading

from apps.sqlite_tasks import app

__all__ = ["app"]

_never = threading.Event()
threading.Thread(target=_never.wait, name="started-at-import", daemon=True).start()
