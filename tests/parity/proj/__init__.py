"""A Celery-style project for the parity suite, laid out as Celery's "Next Steps" guide lays
``proj`` out (``proj/celery.py`` holds the app, ``proj/tasks.py`` the tasks), with only the
imports changed from Celery's to celeriac's. Workers load it with ``-A proj``."""
