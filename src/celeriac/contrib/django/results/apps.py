"""The Django app of celeriac's results backend and admin pages."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]


class ResultsConfig(AppConfig):  # type: ignore[misc]
    """``celeriac.contrib.django.results``: its tables are ``celeriac_results_*``."""

    name = "celeriac.contrib.django.results"
    label = "celeriac_results"
    verbose_name = "Celeriac"
    default_auto_field = "django.db.models.BigAutoField"
