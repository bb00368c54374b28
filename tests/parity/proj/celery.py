"""``proj/celery.py`` of Celery's "Next Steps" guide: the app, with ``include=`` naming the
tasks modules a worker imports when it starts."""

from __future__ import annotations

from celeriac import Celeriac

app = Celeriac(
    "proj",
    include=["proj.tasks", "proj.retries", "proj.classes", "proj.shared", "proj.receivers"],
)
app.config_from_object("proj.celeryconfig")

# Optional configuration, see the application user guide.
app.conf.update(
    result_expires=3600,
)
