"""The Redis result backend: ``backend`` stores and reads results; ``subscriber`` is the
per-thread pub/sub connection that ``get()`` waits on. ``layout="celery"`` picks
``celery_backend``, Celery's keys and records (converted by ``celery_format``, written by the
Lua of ``celery_scripts``), so that Celery and celeriac processes share results."""

from celeriac.results.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
