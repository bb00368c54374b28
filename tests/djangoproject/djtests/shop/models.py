"""A row a view creates and a task reads."""

from __future__ import annotations

from django.db import models  # type: ignore[import-untyped]


class Order(models.Model):  # type: ignore[misc]
    note = models.CharField(max_length=100)
