"""Django integration (``pip install "celeriac[django]"``): Celery's Django pattern, unchanged.

``proj/celery.py``, as in Celery's "First steps with Django", with one import changed::

    import os
    from celeriac import Celeriac

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    app = Celeriac("proj")
    app.config_from_object("django.conf:settings", namespace="CELERIAC")  # or "CELERY"
    app.autodiscover_tasks()        # the tasks.py of every installed app, when a worker starts

What the integration does, and where:

* settings: ``namespace="CELERIAC"`` reads ``CELERIAC_BROKER_URL``, ``CELERIAC_TASK_ACKS_LATE``...
  from ``settings.py``; ``namespace="CELERY"`` reads Celery's ``CELERY_`` names, so a project
  moves over without renaming anything (:mod:`celeriac.app.config`);
* the fixup (:mod:`.fixup`), installed on an app when ``DJANGO_SETTINGS_MODULE`` is set or its
  settings come from ``django.conf:settings``: ``django.setup()`` before a worker (and each
  prefork child) imports the task modules, and every database connection closed when it is
  unusable or past ``CONN_MAX_AGE``, before and after each task (:mod:`.worker`), as Django does
  around each request, so a worker survives a database restart;
* sending after commit: ``task.delay_on_commit(...)`` and ``task.apply_async_on_commit(...)``
  on the tasks of such an app (:class:`~.task.DjangoTask`), or the typed functions
  :func:`~.task.delay_on_commit` / :func:`~.task.apply_async_on_commit` for any task: the
  message is published when the surrounding transaction commits, never if it rolls back;
* results in the Django database (optional): add ``"celeriac.contrib.django.results"`` to
  ``INSTALLED_APPS``, migrate, and set ``CELERIAC_RESULT_BACKEND = "django-db://"`` (or
  ``django-db://<alias>`` for another database); the admin shows task results and the app's
  beat entries (:mod:`.results`).

Nothing here imports Django until it is used, so importing celeriac costs a Django-free process
nothing.
"""
