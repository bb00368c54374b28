"""The one error a schedule declared wrong raises."""

from __future__ import annotations

from celeriac.errors import ImproperlyConfigured

__all__ = ["ScheduleError"]


class ScheduleError(ImproperlyConfigured, ValueError):
    """A schedule declared wrong: the message names the field (or argument) and the value.

    Also a ``ValueError``, which is what Celery raises for most bad crontab patterns, so code
    written for Celery that catches ``ValueError`` still catches it.
    """
