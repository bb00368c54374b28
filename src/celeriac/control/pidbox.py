"""Celery's remote-control layout on the wire ("pidbox"), shared by the client and the worker.

Kept exactly as kombu lays it out, so that Celery's own ``celery inspect``/``celery control``
(and Flower) speak to celeriac workers, and celeriac's client to Celery workers:

* a **request** is published, transient, to the fanout exchange ``<namespace>.pidbox``
  (``celery.pidbox``: the namespace is the ``control_exchange`` setting) with headers
  ``{"clock": n, "expires": unix time or 0}`` and the JSON body ``{"method", "arguments",
  "destination", "pattern", "matcher"}``, plus ``"ticket"`` and ``"reply_to": {"exchange",
  "routing_key"}`` when a reply is wanted (a *call*; without them it is a *cast*);
* a worker runs it when its node name is in ``destination``, or matches ``pattern`` under
  ``matcher`` (``glob``, the default, or ``pcre``), or when neither is given;
* a **reply** goes to the direct exchange ``reply.<namespace>.pidbox`` with the routing key the
  request named (the caller's *oid*), headers ``{"ticket", "clock"}`` and the JSON body
  ``{"<node name>": result}``, transient; the caller listens on that exchange with its oid from
  before it sends the request until it has what it waited for (:mod:`.calls`).
"""

from __future__ import annotations

import fnmatch
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from celeriac.errors import DecodeError
from celeriac.protocol.message import Message
from celeriac.routing import Exchange

JSON = "application/json"
#: ``delivery_mode`` 1: Celery publishes replies (and we, requests) non-persistent.
TRANSIENT = 1


class Clock(Protocol):
    """What remote control needs of a clock (this module's, or the events dispatcher's)."""

    @property
    def value(self) -> int: ...

    def forward(self) -> int: ...

    def adjust(self, other: int) -> int: ...


class LamportClock:
    """A logical clock (Celery's ``app.clock``): forwarded by every send, moved past every
    clock value received, so that messages of many nodes can be put in one order."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def forward(self) -> int:
        with self._lock:
            self._value += 1
            return self._value

    def adjust(self, other: int) -> int:
        """Move past a value another node sent (anything not an int is ignored)."""
        with self._lock:
            if isinstance(other, int) and not isinstance(other, bool):
                self._value = max(self._value, other) + 1
            return self._value

    def __str__(self) -> str:
        return str(self._value)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """The names of one remote-control namespace (Celery's ``control_exchange``)."""

    namespace: str = "celery"

    @property
    def exchange(self) -> Exchange:
        """Where requests go: fanout, not durable (kombu's ``Mailbox`` declares it so; other
        flags would make RabbitMQ refuse one of the two declarations)."""
        return Exchange(f"{self.namespace}.pidbox", "fanout", durable=False)

    @property
    def reply_exchange(self) -> Exchange:
        return Exchange(f"reply.{self.namespace}.pidbox", "direct", durable=False)


def new_oid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """One request as the body and headers of Celery's pidbox message carry it."""

    method: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    destination: Sequence[str] | None = None
    pattern: str | None = None
    matcher: str | None = None
    #: Set on calls (a reply is wanted), absent on casts.
    ticket: str | None = None
    reply_to: Mapping[str, str] | None = None
    clock: int = 0
    #: When the caller stops listening (unix time), 0 for never; informative only, as in Celery.
    expires: float = 0.0

    @property
    def wants_reply(self) -> bool:
        return bool(self.reply_to and self.reply_to.get("routing_key"))

    def addressed_to(self, hostname: str) -> bool:
        """kombu's rule: the destination list, else the pattern, else everyone."""
        if self.destination:
            return hostname in self.destination
        if self.pattern and self.matcher:
            return match(hostname, self.pattern, self.matcher)
        return True

    def to_message(self) -> Message:
        body: dict[str, Any] = {
            "method": self.method,
            "arguments": dict(self.arguments),
            "destination": list(self.destination) if self.destination else None,
            "pattern": self.pattern,
            "matcher": self.matcher,
        }
        if self.ticket is not None and self.reply_to is not None:
            body["ticket"] = self.ticket
            body["reply_to"] = dict(self.reply_to)
        return Message(
            headers={"clock": self.clock, "expires": self.expires},
            body=dumps(body),
            content_type=JSON,
            properties={"delivery_mode": TRANSIENT},
        )

    @classmethod
    def from_message(cls, message: Message) -> ControlRequest:
        """The request in ``message``; DecodeError naming what is wrong with it."""
        body = _json_body(message.body, message.content_type, "control request")
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            raise DecodeError("a control request must be a JSON object with a 'method'")
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise DecodeError("control request 'arguments' must be an object")
        destination = body.get("destination")
        if destination is not None and not isinstance(destination, list | tuple):
            destination = [destination]
        reply_to = body.get("reply_to")
        clock = message.headers.get("clock")
        expires = message.headers.get("expires")
        return cls(
            method=body["method"],
            arguments=arguments,
            destination=[str(d) for d in destination] if destination else None,
            pattern=body.get("pattern"),
            matcher=body.get("matcher"),
            ticket=body.get("ticket"),
            reply_to=reply_to if isinstance(reply_to, dict) else None,
            clock=clock if isinstance(clock, int) else 0,
            expires=float(expires) if isinstance(expires, int | float) else 0.0,
        )


def match(hostname: str, pattern: str, matcher: str | None) -> bool:
    """kombu's matchers: ``glob`` (fnmatch, the default) or ``pcre`` (a regular expression
    searched from the start of the name); an unknown matcher matches nothing."""
    kind = matcher or "glob"
    if kind == "glob":
        return fnmatch.fnmatch(hostname, pattern)
    if kind == "pcre":
        try:
            return re.match(pattern, hostname) is not None
        except re.error:
            return False
    return False


def reply_message(nodename: str, result: Any, ticket: str | None, clock: int) -> Message:
    """A worker's reply: ``{nodename: result}``, with the ticket of the request it answers."""
    return Message(
        headers={"ticket": ticket, "clock": clock},
        body=dumps({nodename: result}),
        content_type=JSON,
        properties={"delivery_mode": TRANSIENT},
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply as read back: ``{nodename: result}``, its ticket and its clock."""

    body: dict[str, Any]
    ticket: str | None = None
    clock: int | None = None


def read_reply(message: Message) -> Reply:
    """The reply in a received ``message``; DecodeError when it is not an object of node
    names in JSON."""
    body = _json_body(message.body, message.content_type, "reply")
    if not isinstance(body, dict):
        raise DecodeError("a control reply must be an object of node names")
    ticket, clock = message.headers.get("ticket"), message.headers.get("clock")
    return Reply(
        body,
        str(ticket) if ticket is not None else None,
        clock if isinstance(clock, int) else None,
    )


def _json_body(body: bytes, content_type: str, what: str) -> Any:
    if content_type and content_type.split(";")[0].strip() not in (JSON, ""):
        raise DecodeError(f"a {what} in {content_type!r}: only JSON is read")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"a {what} is not JSON: {exc}") from None


def dumps(value: Any) -> bytes:
    """JSON for the wire; what JSON has no form for is sent as its ``repr`` (a reply must
    never fail to go because a setting or an argument holds an object)."""
    return orjson.dumps(value, default=_fallback, option=orjson.OPT_NON_STR_KEYS)


def _fallback(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def expires_at(timeout: float | None) -> float:
    """The ``expires`` header of a request waited on for ``timeout`` seconds."""
    return time.time() + timeout if timeout else 0.0
