"""Monitoring events in Celery's format: send them, receive them, fold them into cluster state.

* :class:`EventDispatcher` (:mod:`.dispatcher`): what a worker uses to send ``task-*`` and
  ``worker-*`` events, batched and bounded;
* :class:`EventReceiver` (:mod:`.receiver`): the events published from now on, sync or async;
* :class:`State` (:mod:`.state`): workers alive or lost, tasks by id with their history,
  counts and rates per task type, bounded in memory: the base of ``celeriac events`` and of
  dashboards.

The wire format (:mod:`.event`) is Celery's, so Celery's tools read celeriac's events and the
reverse. ``celeriac events`` (the terminal monitor, :mod:`.monitor`) is built on these.
"""

from __future__ import annotations

from celeriac.events.clock import LamportClock
from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.event import (
    EVENT_EXCHANGE_NAME,
    Event,
    event_exchange,
    group_from,
    make_event,
)
from celeriac.events.receiver import EventReceiver
from celeriac.events.records import Task, Worker
from celeriac.events.state import State

__all__ = [
    "EVENT_EXCHANGE_NAME",
    "Event",
    "EventDispatcher",
    "EventReceiver",
    "LamportClock",
    "State",
    "Task",
    "Worker",
    "event_exchange",
    "group_from",
    "make_event",
]
