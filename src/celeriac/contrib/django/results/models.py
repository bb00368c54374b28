"""The tables of the Django results backend, and the admin's handle on beat entries."""

from __future__ import annotations

from django.db import models  # type: ignore[import-untyped]


class TaskResult(models.Model):  # type: ignore[misc]
    """One task's stored state: ``data`` is the record exactly as the backend encodes it (what
    ``AsyncResult`` reads back); the other columns repeat parts of it for people (the admin,
    queries of your own) and are not read by celeriac. Group records have ids ``taskset:<id>``.
    """

    task_id = models.CharField("task id", max_length=255, unique=True)
    task_name = models.CharField("task name", max_length=255, null=True, blank=True, db_index=True)
    status = models.CharField(max_length=50, db_index=True)
    worker = models.CharField(max_length=255, null=True, blank=True)
    result = models.TextField(null=True, blank=True, help_text="The result (or exception) as JSON")
    traceback = models.TextField(null=True, blank=True)
    date_created = models.DateTimeField("created", auto_now_add=True)
    date_done = models.DateTimeField("done", null=True, blank=True, db_index=True)
    #: Unix time after which the record counts as gone (``result_expires``); None: never.
    expires_at = models.FloatField(null=True, blank=True, db_index=True)
    data = models.BinaryField(help_text="The record as celeriac encodes it")

    class Meta:
        ordering = ("-date_created",)
        verbose_name = "task result"

    def __str__(self) -> str:
        return f"{self.task_name or 'task'}[{self.task_id}] {self.status}"


class ResultCounter(models.Model):  # type: ignore[misc]
    """An atomic counter of the backend: chords count their finished members here."""

    key = models.CharField(max_length=255, unique=True)
    value = models.BigIntegerField(default=0)
    expires_at = models.FloatField(null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = "result counter"

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class BeatEntry(models.Model):  # type: ignore[misc]
    """No table: the admin's page of the default app's beat entries, which live in beat's
    store on the broker (see :class:`~celeriac.contrib.django.results.admin.BeatEntryAdmin`)."""

    name = models.CharField(max_length=255, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "beat entry"
        verbose_name_plural = "beat entries"
