"""Settings of the example project: SQLite for Django, and for celeriac's broker and results.

celeriac reads the ``CELERIAC_`` names (``proj/celery.py``); a ``CELERIAC_<SETTING>`` environment
variable overrides any of them (``CELERIAC_BROKER_URL=redis://127.0.0.1:6379/0``).
"""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-change-me"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "proj.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "celeriac.contrib.django.results",  # admin pages: task results, beat entries
    "orders",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
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
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"},
}

# celeriac (namespace="CELERIAC"): the broker and results in one SQLite file next to manage.py;
# "redis://127.0.0.1:6379/0" or "amqp://guest:guest@127.0.0.1:5672//" in production
CELERIAC_BROKER_URL = f"sqlite:///{BASE_DIR / 'celeriac.db'}"
CELERIAC_RESULT_BACKEND = f"sqlite:///{BASE_DIR / 'celeriac.db'}"
CELERIAC_RESULT_EXTENDED = True  # results keep the task's name and worker
CELERIAC_TASK_ACKS_LATE = True
