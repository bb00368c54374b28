"""An order: created by a view, confirmed by a task."""

from django.db import models  # type: ignore[import-untyped]


class Order(models.Model):  # type: ignore[misc]
    note = models.CharField(max_length=200)
    confirmed = models.BooleanField(default=False)
    task_id = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"order {self.pk}: {self.note}"
