"""Tests of celeriac.contrib.django, with a Django project of their own (``djtests``).

A package (so its ``conftest`` does not shadow ``tests/conftest.py``, which other directories
import as ``conftest``) inside ``tests/djangoproject/`` (not ``tests/django/``: a folder named
``django`` shadows Django itself for mypy and ruff). Django is configured by ``conftest.py``
with :mod:`djtests.settings` when this directory is collected; the rest of the suite never sets
``DJANGO_SETTINGS_MODULE`` and reads no Django settings, so its apps get no Django fixup.
"""
