"""Database connections in a worker: Django's request boundaries, drawn around each task.

Installed by the Django fixup when a worker of the app starts, in the process that runs its tasks
(the worker's main process for the threads and solo pools, each prefork child for prefork):

* at start: ``django.setup()``, and every connection of the process closed (a prefork child is
  spawned, not forked, so it inherits none; closing is the safe side if that ever changes);
* before and after each task (``task_prerun`` / ``task_postrun``): this thread's connections that
  are unusable (an error occurred and they no longer answer) or past ``CONN_MAX_AGE`` are closed,
  as Django does around each request. With the default ``CONN_MAX_AGE = 0`` each task gets a
  new connection, so a database restart between tasks costs nothing; with persistent
  connections, set ``CONN_HEALTH_CHECKS = True`` so a connection is checked before it is used
  again (a task that meets a dead one fails once, and the connection is closed after it);
* at shutdown (``worker_shutdown``, ``worker_process_shutdown``): the connections are closed.

Tasks run eagerly (``apply()``, ``task_always_eager``) run inside the caller, maybe inside its
transaction: they are left alone, as are ``async def`` tasks (Django refuses synchronous
database calls on an event loop; their ``sync_to_async`` calls run on other threads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.contrib.django.db import close_all_connections, close_old_connections
from celeriac.contrib.django.fixup import setup_django

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.task import Task


class DjangoWorkerFixup:
    """The worker side of the integration, for one app (see the module docstring)."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def install(self) -> DjangoWorkerFixup:
        # held weakly by the signals: the app's DjangoFixup keeps this object
        signals.task_prerun.connect(self.on_task_boundary)
        signals.task_postrun.connect(self.on_task_boundary)
        signals.worker_shutdown.connect(self.on_worker_shutdown)
        signals.worker_process_shutdown.connect(self.on_process_shutdown)
        return self

    def on_worker_start(self) -> None:
        setup_django()
        close_all_connections()

    on_process_start = on_worker_start

    def _ours(self, task: Task[Any, Any]) -> bool:
        """A task this fixup looks after: of its app, run by a worker, synchronous."""
        return task.app is self.app and not task.is_async and not task.request.is_eager

    def on_task_boundary(self, sender: Task[Any, Any], **kwargs: Any) -> None:
        if self._ours(sender):
            close_old_connections()

    def on_worker_shutdown(self, sender: Any, **kwargs: Any) -> None:
        if getattr(sender, "app", None) is self.app:
            close_all_connections()

    def on_process_shutdown(self, **kwargs: Any) -> None:
        close_all_connections()
