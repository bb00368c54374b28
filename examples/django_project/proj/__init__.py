"""The example project. Importing the app here makes it exist whenever Django runs, so that a
view's ``delay()`` sends through it (as Celery's Django guide does)."""

from proj.celery import app as celeriac_app

__all__ = ["celeriac_app"]
