"""The Redis broker (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``).

``transport`` is the :class:`~celeriac.transports.base.Transport`; ``scripts`` holds the Lua that
makes each state change one atomic step; ``url`` parses URLs and options (shared with the Redis
result backend); ``wake`` is the blocking wait that ends in a claim; ``fanout`` (PUBLISH and
PSUBSCRIBE on kombu's channel names) and ``direct`` (kombu's lists) are transient fan-out;
``shared`` is the door for state above the broker (beat, revokes).

kombu's layout (``broker_transport_options={"layout": "kombu"}``, shared with Celery workers):
``kombu_transport`` (the transport), ``kombu_layout`` (names and formats), ``kombu_scripts``
(its Lua), ``kombu_publish``, ``kombu_topology`` (exchanges and bindings), ``kombu_restore`` (a
dead consumer's records), ``kombu_wake`` (the idle wait, by key tracking), ``kombu_bridge``
(fanout-bound queues).
"""

from celeriac.transports.redis.transport import RedisTransport

__all__ = ["RedisTransport"]
