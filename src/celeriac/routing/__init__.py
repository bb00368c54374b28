"""Exchanges, queues, bindings and the routers that pick a task's destination.

Two layers, kept apart:

* **Topology** (:mod:`~celeriac.routing.entities`, :mod:`~celeriac.routing.matching`): AMQP
  0-9-1's model. A message is published to an exchange with a routing key; the exchange's
  bindings decide which queues get a copy: zero, one or many. Direct, topic and fanout exchanges
  look at the routing key; headers exchanges at the message's headers (:func:`headers_match`).
  Transports without native exchanges (memory, SQLite, Redis) call :func:`route` over the
  bindings they store; AMQP lets RabbitMQ do it.
* **Task routing** (:class:`Router`, :mod:`~celeriac.routing.routes`): which exchange and
  routing key a *task* is sent with, from ``task_routes`` in every form Celery documents, the
  send's own options and the defaults (:mod:`~celeriac.routing.router` has the rules).

kombu's ``Queue``, ``Exchange``, ``binding`` and ``Broadcast`` objects, which Celery settings are
written with, are read as celeriac's own (:mod:`~celeriac.routing.foreign`), without kombu.

The default exchange ``""`` is AMQP's: a direct exchange to which every queue is bound by its own
name, so ``routing_key="q"`` reaches queue ``q`` with no declaration of bindings at all.
"""

from __future__ import annotations

from celeriac.routing.entities import (
    DEFAULT_EXCHANGE,
    EXCHANGE_TYPES,
    MAX_PRIORITY,
    Binding,
    Broadcast,
    Exchange,
    ExchangeType,
    Queue,
    is_broadcast,
)
from celeriac.routing.foreign import as_exchange, as_queue, queues_setting
from celeriac.routing.matching import headers_match, route, topic_matches
from celeriac.routing.router import Route, Router, RoutesSetting

__all__ = [
    "DEFAULT_EXCHANGE",
    "EXCHANGE_TYPES",
    "MAX_PRIORITY",
    "Binding",
    "Broadcast",
    "Exchange",
    "ExchangeType",
    "Queue",
    "Route",
    "Router",
    "RoutesSetting",
    "as_exchange",
    "as_queue",
    "headers_match",
    "is_broadcast",
    "queues_setting",
    "route",
    "topic_matches",
]
