"""Task messages that differ only in id and arguments, built from one template (the bulk path).

The messages of a batch (``send_many``, ``group.apply_async``) share every header but four: the
id (which is also the correlation id, and the root id of a message sent outside any task), the
``argsrepr`` and ``kwargsrepr``, and the body. Building each through ``task_message`` and
``Message.to_wire`` repeats the shared part per message. A template builds it once: a
*prototype* message whose varying values are placeholders, and the prototype's wire bytes cut
at the placeholders. Per message it copies the prototype's headers with the message's own
values, and joins the cut wire with the JSON of those values. The wire is therefore
``to_wire()``'s own output with the placeholders substituted, byte for byte what the single
path gives (the tests hold that).

A prototype whose wire does not show each placeholder where expected (an ``extra_headers``
entry overriding ``argsrepr``, say) makes no template: the caller then builds each message the
single way.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from celeriac.protocol.message import Message

#: Placeholders: NUL characters keep them apart from anything a sender would put in a header.
ID = "\0celeriac:id\0"
ARGSREPR = "\0celeriac:argsrepr\0"
KWARGSREPR = "\0celeriac:kwargsrepr\0"
BODY = b"\0celeriac:body\0"

_ID, _ARGSREPR, _KWARGSREPR, _BODY = range(4)


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A prototype message cut for substitution; :meth:`build` makes one message of the batch."""

    prototype: Message
    #: The prototype's wire as a ``%b`` format, and which value fills each ``%b`` in turn.
    wire_format: bytes
    pick: Callable[[tuple[bytes, bytes, bytes, bytes]], tuple[bytes, ...]]
    #: Which header and property keys hold the id (``id``, ``root_id``, ``correlation_id``).
    id_headers: tuple[str, ...]
    id_properties: tuple[str, ...]

    @classmethod
    def of(cls, make: Callable[[str, str, str, bytes], Message]) -> MessageTemplate | None:
        """The template of the messages ``make(task_id, argsrepr, kwargsrepr, body)`` builds,
        or ``None`` when the prototype's wire cannot be cut cleanly (see the module docstring)."""
        prototype = make(ID, ARGSREPR, KWARGSREPR, BODY)
        wire = prototype.to_wire()
        tokens = {
            _ID: orjson.dumps(ID),
            _ARGSREPR: orjson.dumps(ARGSREPR),
            _KWARGSREPR: orjson.dumps(KWARGSREPR),
            _BODY: b'"' + base64.b64encode(BODY) + b'"',
        }
        id_headers = _keys_holding(prototype.headers, ID)
        id_properties = _keys_holding(prototype.properties, ID)
        expected = {_ID: len(id_headers) + len(id_properties), _ARGSREPR: 1, _KWARGSREPR: 1}
        found: list[tuple[int, int]] = []  # (position, slot)
        for slot, token in tokens.items():
            if wire.count(token) != expected.get(slot, 1):
                return None
            start = 0
            while (at := wire.find(token, start)) >= 0:
                found.append((at, slot))
                start = at + len(token)
        found.sort()
        pieces, at = [], 0
        for position, slot in found:
            pieces.append(wire[at:position].replace(b"%", b"%%"))
            at = position + len(tokens[slot])
        pieces.append(wire[at:].replace(b"%", b"%%"))
        slots = [slot for _, slot in found]
        if prototype.headers.get("argsrepr") != ARGSREPR:
            return None
        if prototype.headers.get("kwargsrepr") != KWARGSREPR:
            return None
        # at least four slots (the id twice), so itemgetter always returns a tuple
        return cls(prototype, b"%b".join(pieces), itemgetter(*slots), id_headers, id_properties)

    def build(
        self, task_id: str, argsrepr: str, kwargsrepr: str, body: bytes
    ) -> tuple[Message, bytes]:
        """One message of the batch and its wire bytes (what ``message.to_wire()`` returns)."""
        proto = self.prototype
        headers = dict(proto.headers)
        for key in self.id_headers:
            headers[key] = task_id
        headers["argsrepr"] = argsrepr
        headers["kwargsrepr"] = kwargsrepr
        properties = dict(proto.properties)
        for key in self.id_properties:
            properties[key] = task_id
        message = Message(headers, body, proto.content_type, proto.content_encoding, properties)
        values = (
            orjson.dumps(task_id),
            orjson.dumps(argsrepr),
            orjson.dumps(kwargsrepr),
            b'"%b"' % base64.b64encode(body),
        )
        return message, self.wire_format % self.pick(values)


def _keys_holding(mapping: Mapping[str, Any], value: str) -> tuple[str, ...]:
    return tuple(key for key, held in mapping.items() if held == value)


__all__ = ["MessageTemplate"]
