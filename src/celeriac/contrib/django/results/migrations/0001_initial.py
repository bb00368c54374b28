"""The results tables (made by ``makemigrations`` with Django 5.2, then typed for mypy)."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models  # type: ignore[import-untyped]


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations: list[Any] = [
        migrations.CreateModel(
            name="BeatEntry",
            fields=[
                ("name", models.CharField(max_length=255, primary_key=True, serialize=False)),
            ],
            options={
                "verbose_name": "beat entry",
                "verbose_name_plural": "beat entries",
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="ResultCounter",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=255, unique=True)),
                ("value", models.BigIntegerField(default=0)),
                ("expires_at", models.FloatField(blank=True, db_index=True, null=True)),
            ],
            options={
                "verbose_name": "result counter",
            },
        ),
        migrations.CreateModel(
            name="TaskResult",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("task_id", models.CharField(max_length=255, unique=True, verbose_name="task id")),
                (
                    "task_name",
                    models.CharField(
                        blank=True,
                        db_index=True,
                        max_length=255,
                        null=True,
                        verbose_name="task name",
                    ),
                ),
                ("status", models.CharField(db_index=True, max_length=50)),
                ("worker", models.CharField(blank=True, max_length=255, null=True)),
                (
                    "result",
                    models.TextField(
                        blank=True, help_text="The result (or exception) as JSON", null=True
                    ),
                ),
                ("traceback", models.TextField(blank=True, null=True)),
                ("date_created", models.DateTimeField(auto_now_add=True, verbose_name="created")),
                (
                    "date_done",
                    models.DateTimeField(blank=True, db_index=True, null=True, verbose_name="done"),
                ),
                ("expires_at", models.FloatField(blank=True, db_index=True, null=True)),
                ("data", models.BinaryField(help_text="The record as celeriac encodes it")),
            ],
            options={
                "verbose_name": "task result",
                "ordering": ("-date_created",),
            },
        ),
    ]
