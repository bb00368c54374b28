"""What an event is on the wire: Celery's event dict, its exchange, its message.

An event is a flat JSON object with a ``type`` (``task-succeeded``, ``worker-heartbeat``...) and
the sender's ``hostname``, ``utcoffset``, ``pid``, ``clock`` and ``timestamp``: Celery's layout
field for field, so that Celery's own tools (``celery events``, Flower) read celeriac's events
and celeriac's monitor reads Celery's. It is published on the topic exchange ``celeryev`` with
the type as routing key, ``-`` turned into ``.`` (``task.succeeded``); a batch of task events is
one message whose body is a JSON list, routing key ``task.multi``.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import time
from collections.abc import Mapping
from typing import Any

import orjson

from celeriac.errors import DecodeError
from celeriac.protocol.message import Message
from celeriac.routing import Exchange

#: Celery's event exchange name (the ``event_exchange`` setting's default).
EVENT_EXCHANGE_NAME = "celeryev"
#: What every sender puts in its worker events, as Celery's ``SOFTWARE_INFO`` (``sw_ver`` is
#: filled in by :func:`software_info`).
SW_IDENT = "py-celeriac"
#: The routing key of a batch of the group ``task`` (Celery's ``<group>.multi``).
MULTI_SUFFIX = ".multi"

Event = dict[str, Any]


def event_exchange(name: str = EVENT_EXCHANGE_NAME) -> Exchange:
    """The exchange events go to: a durable topic exchange, declared exactly as Celery declares
    it (kombu's defaults), so that RabbitMQ accepts both declarations of one name."""
    return Exchange(name, "topic", durable=True)


def group_from(type_: str) -> str:
    """The group of an event type: ``task`` for ``task-sent``, ``worker`` for ``worker-online``."""
    return type_.split("-", 1)[0]


def routing_key(type_: str) -> str:
    """The routing key of one event: its type with ``-`` as ``.`` (``task.succeeded``)."""
    return type_.replace("-", ".")


def utcoffset() -> float:
    """Hours west of UTC now (UTC+2 gives -2.0), as Celery 5.7 computes it: the receiver
    subtracts the difference to its own offset from the sender's timestamp."""
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def adjust_timestamp(timestamp: float, offset: float) -> float:
    """A sender's ``timestamp`` in the receiver's terms (Celery's ``adjust_timestamp``)."""
    return timestamp - (offset - utcoffset()) * 3600


def load_average() -> list[float]:
    """``os.getloadavg()`` rounded up to two decimals (``[0, 0, 0]`` where there is none)."""
    try:
        loads = os.getloadavg()
    except OSError:
        return [0.0, 0.0, 0.0]
    return [math.ceil(load * 100) / 100 for load in loads]


def software_info(version: str) -> dict[str, str]:
    """The ``sw_*`` fields of worker events."""
    return {"sw_ident": SW_IDENT, "sw_ver": version, "sw_sys": platform.system()}


def anon_nodename() -> str:
    """The hostname of a sender that is not a worker: ``gen<pid>@<host>`` (a client's
    ``task-sent``), as Celery names it."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def make_event(type_: str, fields: Mapping[str, Any] | None = None, **more: Any) -> Event:
    """An event of ``type_``: the fields given, then ``timestamp`` (now, unless given) and
    ``type`` last, in Celery's key order."""
    event: Event = dict(fields or {}, **more)
    event.setdefault("timestamp", time.time())
    event["type"] = type_
    return event


def event_message(hostname: str, body: Event | list[Event]) -> Message:
    """The message carrying one event (a dict) or a batch (a list): JSON, non-persistent,
    header ``hostname`` as Celery's dispatcher sets it."""
    return Message(
        headers={"hostname": hostname},
        body=orjson.dumps(body),
        content_type="application/json",
        content_encoding="utf-8",
        properties={"delivery_mode": 1},
    )


def decode_body(message: Message) -> list[Event]:
    """The events a message carries: one dict or a list of dicts; anything else raises
    :class:`DecodeError` naming what was wrong."""
    if message.content_type not in ("application/json", "json"):
        raise DecodeError(f"event message is {message.content_type!r}, not JSON")
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"event message is not valid JSON: {exc}") from exc
    events = body if isinstance(body, list) else [body]
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise DecodeError(f"not an event (no 'type'): {str(event)[:100]}")
    return events
