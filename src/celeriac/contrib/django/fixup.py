"""The Django fixup: what an app needs when it lives in a Django project, installed by itself.

Every app calls :func:`fixup` when it is created and whenever it reads settings from an object
(see ``BUILTIN_FIXUPS`` in :mod:`celeriac.app.base`). It applies, as Celery's does, when
``DJANGO_SETTINGS_MODULE`` is set, and also when the settings come from Django's
(``app.config_from_object("django.conf:settings", ...)``: a project that calls
``settings.configure()`` sets no variable). An app outside Django pays one environment lookup.

Installed, it:

* makes :class:`~celeriac.contrib.django.task.DjangoTask` the app's task class (unless the app
  names its own), so tasks have ``delay_on_commit``; ``@shared_task`` copies made earlier are
  made again with it;
* calls ``django.setup()`` when the app imports its task modules (the ``import_modules`` signal:
  a worker, each prefork child and beat, before ``autodiscover_tasks`` reads the installed apps);
* when a worker of this app starts (``worker_init``) or a prefork child of it does
  (``worker_process_init``), installs :class:`~celeriac.contrib.django.worker.DjangoWorkerFixup`,
  which looks after the database connections around each task.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.task import Task, shared_tasks

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.contrib.django.worker import DjangoWorkerFixup

logger = logging.getLogger("celeriac.contrib.django")

SETTINGS_SOURCE = "django.conf:settings"


def fixup(app: Celeriac, source: Any = None) -> DjangoFixup | None:
    """Install the Django fixup on ``app`` if it lives in a Django project (see the module
    docstring); returns it, or ``None`` when it does not apply."""
    if not (os.environ.get("DJANGO_SETTINGS_MODULE") or _is_django_settings(source)):
        return None
    try:
        import django  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        logger.warning(
            "DJANGO_SETTINGS_MODULE is set but Django is not installed: "
            'the Django fixup is off (pip install "celeriac[django]")'
        )
        return None
    return DjangoFixup(app).install()


def _is_django_settings(source: Any) -> bool:
    """Whether ``source`` (what an app reads its settings from) is Django's settings object."""
    if source is None:
        return False
    if isinstance(source, str):
        return source == SETTINGS_SOURCE
    conf = sys.modules.get("django.conf")
    return conf is not None and source is getattr(conf, "settings", None)


class DjangoFixup:
    """The app side of the integration (see the module docstring); one per app."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self.worker_fixup: DjangoWorkerFixup | None = None

    def install(self) -> DjangoFixup:
        from celeriac.contrib.django.task import DjangoTask

        app = self.app
        if app.task_cls is Task:
            app.task_cls = DjangoTask
            # the app's copies of the @shared_task tasks known so far, made again as DjangoTasks
            # (the app was created before its settings pointed at Django's)
            for shared, options in shared_tasks():
                copy = app.tasks.get(shared.name)
                if "base" not in options and copy is not None and copy.fn is shared.fn:
                    app.attach_shared(shared, options)
        # receivers are held weakly: this object lives as long as the app keeps it
        signals.import_modules.connect(self.on_import_modules, sender=app)
        signals.worker_init.connect(self.on_worker_init)
        signals.worker_process_init.connect(self.on_worker_process_init)
        return self

    def on_import_modules(self, **kwargs: Any) -> None:
        """Before the task modules are imported: the app registry must be ready, both for
        models imported by ``tasks.py`` and for ``autodiscover_tasks()``'s installed apps."""
        setup_django()

    def on_worker_init(self, sender: Any, **kwargs: Any) -> None:
        """A worker starts (the main process, where the threads and solo pools run tasks)."""
        if getattr(sender, "app", None) is self.app:
            self.install_worker_fixup().on_worker_start()

    def on_worker_process_init(self, **kwargs: Any) -> None:
        """A prefork child of a worker of this app loaded it and is about to run tasks."""
        self.install_worker_fixup().on_process_start()

    def install_worker_fixup(self) -> DjangoWorkerFixup:
        if self.worker_fixup is None:
            from celeriac.contrib.django.worker import DjangoWorkerFixup

            self.worker_fixup = DjangoWorkerFixup(self.app).install()
        return self.worker_fixup


def setup_django() -> None:
    """``django.setup()``, once per process (the app registry and logging of the project)."""
    import django.apps  # type: ignore[import-untyped]

    if not django.apps.apps.ready:
        django.setup()
