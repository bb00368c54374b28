"""The RabbitMQ broker (AMQP 0-9-1: ``amqp://``, ``amqps://``) on aio-pika.

``transport`` is the :class:`~celeriac.transports.base.Transport`; ``link`` one connection with
its channels and failover; ``topology`` declarations; ``codec`` and ``wire`` Celery's AMQP message
layout; ``settle`` acks, rejects and dead letters; ``delay`` TTL delay queues; ``url`` URLs and
TLS options (shared with the rpc result backend); ``transient`` the fan-out of events and control
requests (a queue of its own per listener).
"""

from celeriac.transports.amqp.transport import AMQPTransport

__all__ = ["AMQPTransport"]
