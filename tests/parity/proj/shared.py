"""A reusable module's task: ``@shared_task`` (Celery's "Tasks" guide, and "First steps with
Django" for apps that cannot import the project's app)."""

from __future__ import annotations

from celeriac import Task, shared_task


@shared_task
def shared_add(x: int, y: int) -> int:
    return x + y


@shared_task(bind=True, name="proj.shared.whoami")
def whoami(self: Task[[], str]) -> str:
    """Which app's copy of the task ran: the worker's own."""
    return str(self.app.main)
