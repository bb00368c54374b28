"""kombu's Redis layout as data: key names, priorities, bindings, envelopes, tags, options.

What :mod:`celeriac.transports.redis.kombu_transport` and its scripts agree on with kombu 5.7
(``kombu/transport/redis.py`` and ``virtual/``), written as plain functions so each can be
checked against kombu itself:

* a queue ``q`` is the list ``q`` and its priority lists ``q\\x06\\x16<step>`` for the steps
  above 0 (``priority_steps``, ``[0, 3, 6, 9]``); a message of priority ``p`` goes to the list of
  the largest step not above ``p``, and **step 0 is served first**: on Redis kombu serves a lower
  number first, the opposite of AMQP;
* a binding is the member ``<routing key>\\x06\\x16<pattern>\\x06\\x16<queue>`` of the set
  ``_kombu.binding.<exchange>`` (and, since kombu 5.7, of ``_kombu.binding_permanent.<exchange>``
  for a queue without ``x-expires``); ``pattern`` is kombu's regex for a topic binding, empty
  otherwise;
* an envelope is kombu's JSON (body in base64) whose properties carry ``delivery_info``
  (exchange, routing key), a ``delivery_tag`` and ``body_encoding``;
* every key is under kombu's ``global_keyprefix``; celeriac's own keys (dead letters, exchange
  types, dedup records) are under ``global_keyprefix + key_prefix``.

A restore marks a message as kombu does (``headers.redelivered`` and
``properties.delivery_info.redelivered``) and counts its deliveries in the property
:data:`COUNT_PROPERTY`, which kombu carries along untouched.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from celeriac.errors import DecodeError, ImproperlyConfigured
from celeriac.protocol.message import Message
from celeriac.transports.base import Delivery

NATIVE_LAYOUT = "celeriac"
KOMBU_LAYOUT = "kombu"
SEP = "\x06\x16"
DEFAULT_STEPS = (0, 3, 6, 9)
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
#: The property in which a restore records how many times the message was delivered.
COUNT_PROPERTY = "x-delivery-count"
#: Of those deliveries, how many a living worker gave back (celeriac's own property).
REQUEUES_PROPERTY = "x-celeriac-requeues"
#: Fields of kombu's ``unacked`` hash that are celeriac's delayed messages, not leases:
#: ``celeriac-due:<list>:<tag>``, restored to ``<list>`` as they are when due.
DUE_PREFIX = "celeriac-due:"
TAG_LENGTH = 36  # a uuid4's text: every tag this layout makes is one
_COUNT = COUNT_PROPERTY.encode()


def layout_of(options: Mapping[str, Any]) -> str:
    """The ``layout`` transport option, checked: ``celeriac`` (the default) or ``kombu``."""
    value = options.get("layout")
    if value is None:
        return NATIVE_LAYOUT
    if value not in (NATIVE_LAYOUT, KOMBU_LAYOUT):
        raise ImproperlyConfigured(
            f"broker_transport_options 'layout' must be {NATIVE_LAYOUT!r} (the default) or "
            f"{KOMBU_LAYOUT!r} (kombu's Redis keys, shared with Celery workers), not {value!r}"
        )
    return str(value)


@dataclass(frozen=True, slots=True)
class KombuOptions:
    """The transport options this layout reads (see :meth:`of`)."""

    visibility_timeout: float
    steps: tuple[int, ...]
    unacked: str
    unacked_index: str

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> KombuOptions:
        """kombu's ``visibility_timeout`` (else ``lease_seconds``, else 3600 s),
        ``priority_steps``, ``unacked_key`` and ``unacked_index_key``; a ``sep`` other than
        kombu's default is refused (this layout speaks only that one)."""
        raw = options.get("visibility_timeout", options.get("lease_seconds"))
        try:
            timeout = DEFAULT_VISIBILITY_TIMEOUT if raw is None else float(raw)
        except (TypeError, ValueError):
            timeout = -1.0
        if not timeout > 0:
            raise ImproperlyConfigured(
                f"broker_transport_options 'visibility_timeout' must be a number of seconds "
                f"> 0, not {raw!r}"
            )
        sep = options.get("sep", SEP)
        if sep != SEP:
            raise ImproperlyConfigured(
                f"broker_transport_options 'sep' {sep!r}: the kombu layout speaks only kombu's "
                "default separator '\\x06\\x16'"
            )
        return cls(
            timeout,
            _steps(options.get("priority_steps", DEFAULT_STEPS)),
            _name(options, "unacked_key", "unacked"),
            _name(options, "unacked_index_key", "unacked_index"),
        )


def _steps(value: Any) -> tuple[int, ...]:
    try:
        steps = () if isinstance(value, str | bytes) else tuple(int(step) for step in value)
    except (TypeError, ValueError):
        steps = ()
    if not steps or steps[0] != 0 or list(steps) != sorted(set(steps)) or steps[-1] > 9:
        raise ImproperlyConfigured(
            f"broker_transport_options 'priority_steps' must be increasing numbers from 0 "
            f"up to 9 at most (kombu's default: [0, 3, 6, 9]), not {value!r}"
        )
    return steps


def _name(options: Mapping[str, Any], option: str, default: str) -> str:
    value = options.get(option, default)
    if not isinstance(value, str) or not value:
        raise ImproperlyConfigured(f"broker_transport_options {option!r} must be a key name")
    return value


@dataclass(frozen=True, slots=True)
class KombuNames:
    """Key names under kombu's ``global_keyprefix`` (``glob``) and celeriac's own (``own``)."""

    glob: str
    own: str
    steps: tuple[int, ...]
    unacked: str
    unacked_index: str

    @classmethod
    def of(cls, global_prefix: str, key_prefix: str, options: KombuOptions) -> KombuNames:
        return cls(
            global_prefix,
            global_prefix + key_prefix,
            options.steps,
            global_prefix + options.unacked,
            global_prefix + options.unacked_index,
        )

    def suffix(self, priority: int) -> str:
        """The list suffix of a priority (``""`` for step 0), as kombu's ``_q_for_pri``."""
        step = self.steps[bisect.bisect(self.steps, max(0, min(9, priority))) - 1]
        return f"{SEP}{step}" if step else ""

    def lists(self, queue: str) -> list[str]:
        """The lists of ``queue``, served in this order (kombu's BRPOP order)."""
        return [self.glob + queue + (f"{SEP}{step}" if step else "") for step in self.steps]

    def table(self, exchange: str) -> str:
        return f"{self.glob}_kombu.binding.{exchange}"

    def permanent(self, exchange: str) -> str:
        return f"{self.glob}_kombu.binding_permanent.{exchange}"

    def dlq(self, queue: str) -> str:
        return f"{self.own}dlq:{queue}"

    @property
    def exchanges(self) -> str:
        """celeriac's record of exchange types (kombu keeps them in each process's memory)."""
        return f"{self.own}exchanges"

    @property
    def poison(self) -> str:
        """Claimed payloads that are not JSON objects, kept out of kombu's ``unacked``."""
        return f"{self.own}poison"


def member(routing_key: str, pattern: str, queue: str) -> str:
    """A binding as kombu stores it in ``_kombu.binding.<exchange>``."""
    return SEP.join((routing_key, pattern, queue))


def split_member(value: bytes | str) -> tuple[str, str, str] | None:
    """``(routing key, pattern, queue)`` of a binding member, or None if it is not one."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    parts = text.split(SEP)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def topic_pattern(routing_key: str) -> str:
    """kombu's regex for a topic binding key (``TopicExchange.key_to_pattern``): stored beside
    the key so that kombu's own producers route as before; celeriac matches the key itself."""
    escaped = "".join(
        c if c.isalnum() or c in ".#*" else ("\\000" if c == "\0" else "\\" + c)
        for c in routing_key
    )
    wild = {"*": r"[^\.]+", "#": r".*?"}
    joined = r"\.".join(wild.get(word, word) for word in escaped.split("."))
    return f"^{joined}$"


class Tags:
    """Delivery tags shaped like kombu's (uuid4 text), cheap to make: a random 24-character
    uuid4 head per process (drawn again after a fork) and a 12-digit hex counter. The claim
    script makes a batch's tags itself from :meth:`reserve`'s head and first number."""

    def __init__(self) -> None:
        self._draw()
        os.register_at_fork(after_in_child=self._draw)

    def _draw(self) -> None:
        self.head = str(uuid.uuid4())[:24]
        self._counter = itertools.count(secrets.randbelow(1 << 40))

    def next(self) -> str:
        return f"{self.head}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"

    def reserve(self, count: int) -> tuple[str, int]:
        """A head and the first of ``count`` consecutive numbers (taken from the counter)."""
        first = next(self._counter) & 0xFFFFFFFFFFFF
        for _ in range(count - 1):
            next(self._counter)
        if first + count > 0xFFFFFFFFFFFF:  # would wrap inside the batch: start over at 0
            self._counter = itertools.count(count)
            first = 0
        return self.head, first


def delivery_info(exchange: str, routing_key: str) -> bytes:
    """The ``delivery_info`` object of a message published with these (JSON bytes)."""
    return orjson.dumps({"exchange": exchange, "routing_key": routing_key})


def publish_envelope(payload: bytes, info: bytes, tag: str) -> bytes:
    """``payload`` (``Message.to_wire`` output) with the properties kombu's publisher adds:
    ``delivery_info`` and a fresh ``delivery_tag`` (``body_encoding`` is already there).

    ``to_wire`` ends with the properties object, so they are added before its two closing
    braces; an envelope that already carries delivery fields (a message taken from a queue and
    sent again) is rebuilt instead, its old tag, marks and count dropped.
    """
    if (
        payload.endswith(b"}}")
        and b'"delivery_tag"' not in payload
        and b'"delivery_info"' not in payload
        and b"redelivered" not in payload
        and _COUNT not in payload
    ):
        return b'%b,"delivery_info":%b,"delivery_tag":"%b"}}' % (payload[:-2], info, tag.encode())
    envelope = orjson.loads(payload)
    headers = envelope.get("headers")
    if isinstance(headers, dict):
        headers.pop("redelivered", None)
    properties = envelope.setdefault("properties", {})
    properties.pop(COUNT_PROPERTY, None)
    properties["delivery_info"] = orjson.loads(info)
    properties["delivery_tag"] = tag
    return orjson.dumps(envelope)


def requeues(envelope: Mapping[str, Any]) -> int:
    """How many of the message's deliveries ended in a requeue by a living worker."""
    properties = envelope.get("properties")
    recorded = properties.get(REQUEUES_PROPERTY) if isinstance(properties, Mapping) else None
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
        return recorded
    return 0


def previous_deliveries(envelope: Mapping[str, Any]) -> int:
    """How many times the message in ``envelope`` was delivered before: the count a restore
    recorded, else 1 if kombu marked it redelivered (a Celery worker's restore), else 0."""
    properties = envelope.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    recorded = properties.get(COUNT_PROPERTY)
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
        return recorded
    headers = envelope.get("headers")
    info = properties.get("delivery_info")
    marked = (isinstance(headers, Mapping) and headers.get("redelivered")) or (
        isinstance(info, Mapping) and info.get("redelivered")
    )
    return 1 if marked else 0


def restored_envelope(envelope: dict[str, Any], *, requeued: bool = False) -> bytes:
    """``envelope`` marked as kombu's restore marks it, its delivery counted; kombu's JSON
    (``json.dumps`` with the default separators, as ``kombu.utils.json.dumps`` writes it).
    ``requeued``: given back by a living worker, which is counted apart (:func:`requeues`), as
    ``max_deliveries`` counts only deliveries whose worker lost them."""
    count = previous_deliveries(envelope) + 1
    if requeued and isinstance(envelope.get("properties"), dict):
        envelope["properties"][REQUEUES_PROPERTY] = requeues(envelope) + 1
    try:
        envelope["headers"]["redelivered"] = True
        envelope["properties"]["delivery_info"]["redelivered"] = True
    except (KeyError, TypeError):
        pass  # kombu leaves such a message unmarked too
    properties = envelope.get("properties")
    if isinstance(properties, dict):
        properties[COUNT_PROPERTY] = count
    return json.dumps(envelope).encode()


def envelope_priority(envelope: Mapping[str, Any]) -> int:
    """kombu's ``_get_message_priority``: the property clamped to 0-9, 0 when unreadable."""
    properties = envelope.get("properties")
    try:
        value = int(properties["priority"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return 0
    return 0 if value < 0 else 9 if value > 9 else value


def claimed(tag: str, queue: str, raw: Any) -> Delivery:
    """The delivery of a message the claim took from ``queue`` under ``tag``: its count,
    exchange, routing key and priority read from the envelope (decoded once, here, as the
    consumer would decode it anyway; a payload that is not a JSON object is marked
    ``poison``, as the claim script judged it: it is in celeriac's poison hash, not in
    kombu's records)."""
    payload = bytes(raw)
    data: dict[str, Any] = {"exchange": "", "routing_key": queue, "priority": 0}
    if payload[:1] != b"{" or payload[-1:] != b"}":
        data["poison"] = True
        return Delivery(tag, queue, payload, 1, data)
    message: Message | None = None
    try:
        message = Message.from_wire(payload)
        envelope: Any = {"headers": message.headers, "properties": message.properties}
    except DecodeError:
        try:
            envelope = orjson.loads(payload)
        except orjson.JSONDecodeError:
            envelope = {}
    if not isinstance(envelope, dict):
        envelope = {}
    properties = envelope.get("properties")
    info = properties.get("delivery_info") if isinstance(properties, dict) else None
    if isinstance(info, dict):
        data["exchange"] = str(info.get("exchange") or "")
        data["routing_key"] = str(info.get("routing_key") or queue)
    data["priority"] = envelope_priority(envelope)
    count = 1
    if b"redelivered" in payload or _COUNT in payload:  # else it was never restored
        count = previous_deliveries(envelope) + 1
        data["requeues"] = requeues(envelope)
    return Delivery(tag, queue, payload, count, data, _message=message)


def due_field(list_name: str, tag: str) -> str:
    """The ``unacked`` field of a delayed message for ``list_name`` (without the prefix)."""
    return f"{DUE_PREFIX}{list_name}:{tag}"


def due_list(field_name: str) -> str | None:
    """The list (without the prefix) a delayed message's ``unacked`` field names, if it is one."""
    if not field_name.startswith(DUE_PREFIX) or len(field_name) < len(DUE_PREFIX) + TAG_LENGTH + 2:
        return None
    return field_name[len(DUE_PREFIX) : -(TAG_LENGTH + 1)]


def list_queue(list_name: str, steps: Sequence[int]) -> str:
    """The queue a list (without the prefix) belongs to: ``q\\x06\\x163`` is ``q``'s."""
    for step in steps:
        if step and list_name.endswith(f"{SEP}{step}"):
            return list_name[: -len(f"{SEP}{step}")]
    return list_name


__all__ = [
    "COUNT_PROPERTY",
    "DEFAULT_STEPS",
    "DUE_PREFIX",
    "KOMBU_LAYOUT",
    "NATIVE_LAYOUT",
    "SEP",
    "KombuNames",
    "KombuOptions",
    "Tags",
    "claimed",
    "delivery_info",
    "due_field",
    "due_list",
    "envelope_priority",
    "layout_of",
    "list_queue",
    "member",
    "previous_deliveries",
    "publish_envelope",
    "requeues",
    "restored_envelope",
    "split_member",
    "topic_pattern",
]
