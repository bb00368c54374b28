"""Task results in the Django database, and admin pages for them and for beat's entries.

Optional: add ``"celeriac.contrib.django.results"`` to ``INSTALLED_APPS``, run ``migrate``, and
set ``CELERIAC_RESULT_BACKEND = "django-db://"`` (``django-db://<alias>`` stores them in another
of ``DATABASES``). The backend (:mod:`.backend`) keeps one row per task
(:class:`~.models.TaskResult`: the record as celeriac encodes it, plus readable columns for the
admin) and the counters chords join with (:class:`~.models.ResultCounter`). The admin
(:mod:`.admin`) lists results read-only (with search and filters, deletable) and the default
app's beat entries, with their schedule, last and next run.

This package is a Django app: nothing here may import its models before Django's app registry
is ready, so the backend imports them when first used.
"""
