"""Admin pages: task results (read-only, searchable, deletable) and the app's beat entries.

Results are rows of :class:`~.models.TaskResult`. Beat entries are not in the Django database:
they live in beat's store on the broker, and change there at run time (``app.beat.add``,
``pause``...), so the page reads them through the default app's ``app.beat`` each time it is
shown (the app of ``proj/celery.py``, which ``proj/__init__.py`` imports, in Celery's layout):
read-only, with each entry's task, schedule, last slot handled and next run. Changing entries
stays with ``app.beat`` and ``celeriac beat`` (the admin's add, change and delete are off).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin  # type: ignore[import-untyped]
from django.core.exceptions import PermissionDenied  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
from django.template import engines  # type: ignore[import-untyped]

from celeriac.context import current_app
from celeriac.contrib.django.results.models import BeatEntry, TaskResult

logger = logging.getLogger("celeriac.contrib.django")


@admin.register(TaskResult)
class TaskResultAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """Results as the backend stored them; nothing here is edited by hand."""

    list_display = ("task_id", "task_name", "status", "worker", "date_done")
    list_filter = ("status", "date_done", "worker")
    search_fields = ("task_id", "task_name", "worker")
    date_hierarchy = "date_done"
    exclude = ("data",)
    readonly_fields = (
        "task_id",
        "task_name",
        "status",
        "worker",
        "result",
        "traceback",
        "date_created",
        "date_done",
        "expires_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


#: The beat page: the admin's frame (header, breadcrumbs) around one table.
BEAT_TEMPLATE = """{% extends "admin/base_site.html" %}
{% block breadcrumbs %}<div class="breadcrumbs">
<a href="{% url 'admin:index' %}">Home</a> &rsaquo;
<a href="{% url 'admin:app_list' app_label=opts.app_label %}">{{ opts.app_config.verbose_name }}</a>
&rsaquo; {{ opts.verbose_name_plural|capfirst }}</div>{% endblock %}
{% block content %}<div id="content-main">
{% if error %}<p class="errornote">{{ error }}</p>{% endif %}
<table id="result_list"><thead><tr>
<th>Name</th><th>Task</th><th>Schedule</th><th>State</th><th>Last slot</th><th>Next run</th>
</tr></thead><tbody>
{% for row in rows %}<tr>
<td>{{ row.name }}</td><td>{{ row.task }}</td><td>{{ row.schedule }}</td><td>{{ row.state }}</td>
<td>{{ row.last|default:"-" }}</td><td>{{ row.next|default:"-" }}</td>
</tr>{% empty %}<tr><td colspan="6">No beat entries.</td></tr>{% endfor %}
</tbody></table></div>{% endblock %}
"""


@admin.register(BeatEntry)
class BeatEntryAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """The default app's beat entries, read from beat's store (see the module docstring)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows, error = beat_rows()
        context = {
            **self.admin_site.each_context(request),
            "title": "Beat entries",
            "opts": self.model._meta,
            "rows": rows,
            "error": error,
            **(extra_context or {}),
        }
        page = engines["django"].from_string(BEAT_TEMPLATE)
        return HttpResponse(page.render(context, request))


def beat_rows() -> tuple[list[dict[str, Any]], str | None]:
    """One row per entry of the default app's beat, and the error that stopped reading them."""
    try:
        beat = current_app().beat
        entries, runs = beat.list(), beat.runs()
        rows = [
            {
                "name": entry.name,
                "task": entry.task,
                "schedule": repr(entry.schedule),
                "state": "paused" if entry.paused else "active",
                "last": runs.get(entry.name),
                "next": None if entry.paused else beat.next_run(entry),
            }
            for entry in entries
        ]
    except Exception as exc:  # the broker is down, no app: say so on the page
        logger.warning("admin: cannot read the beat entries: %s", exc)
        return [], f"Cannot read the beat entries: {exc}"  # the template escapes it
    return rows, None
