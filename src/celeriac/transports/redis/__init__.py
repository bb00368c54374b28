"""The Redis broker (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``).

``transport`` is the :class:`~celeriac.transports.base.Transport`; ``scripts`` holds the Lua that
makes each state change one atomic step; ``url`` parses URLs and options (shared with the Redis
result backend); ``wake`` is the blocking wait that ends in a claim; ``fanout`` (PUBLISH and
PSUBSCRIBE on kombu's channel names) and ``direct`` (kombu's lists) are transient fan-out.
"""

from celeriac.transports.redis.transport import RedisTransport

__all__ = ["RedisTransport"]
