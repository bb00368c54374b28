"""The project's celeriac app: Celery's ``proj/celery.py``, with one import changed.

``celeriac -A proj worker`` finds it (``-A proj`` looks for ``proj/celery.py``).
"""

import os

from celeriac import Celeriac

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celeriac("proj")
# CELERIAC_BROKER_URL, CELERIAC_TASK_ACKS_LATE... from settings.py; namespace="CELERY" reads
# Celery's CELERY_ names instead
app.config_from_object("django.conf:settings", namespace="CELERIAC")
app.autodiscover_tasks()  # the tasks.py of every installed app, imported when a worker starts
