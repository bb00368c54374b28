"""The test project's Django settings: SQLite (``default``) and PostgreSQL (``pg``).

Each test database has a name of this process's own (``test_celeriac_dj_<pid>``, a SQLite file
in a temporary directory), so that two test runs on one machine do not drop each other's.
PostgreSQL is left out when it does not answer, unless ``CELERIAC_REQUIRE_SERVICES=1`` (then
its tests fail setting up the database, as a missing server must fail there).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile

_REQUIRE_SERVICES = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"
_DIR = tempfile.mkdtemp(prefix="celeriac-django-")
atexit.register(shutil.rmtree, _DIR, True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


#: Whether the PostgreSQL tests run (the ``pg`` database exists).
postgres = _REQUIRE_SERVICES or _answers(5432)

SECRET_KEY = "celeriac-django-tests"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "djtests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "celeriac.contrib.django.results",
    "djtests.shop",
    "djtests.inventory",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES: dict[str, dict[str, object]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_DIR, "db.sqlite3"),
        "TEST": {"NAME": os.path.join(_DIR, "test.sqlite3")},
    },
}
if postgres:
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "TEST": {"NAME": f"test_celeriac_dj_{os.getpid()}", "DEPENDENCIES": []},
    }

# celeriac's settings, read with namespace="CELERIAC" (each test's app gets a broker of its own)
CELERIAC_BROKER_URL = "memory://djtests"
CELERIAC_RESULT_BACKEND = "memory://djtests"
CELERIAC_TASK_DEFAULT_QUEUE = "dj"
