"""The Redis result backend: ``backend`` stores and reads results; ``subscriber`` is the
per-thread pub/sub connection that ``get()`` waits on."""

from celeriac.results.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
