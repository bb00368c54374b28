"""The per-message part of a bulk send: what ``app.send_many`` does for each call.

:meth:`Celeriac.send_many <celeriac.app.Celeriac.send_many>` plans each task name once (route,
serializer, headers, expiry, parent ids) and keeps the result in a :class:`BatchSender`; each
call then costs an id, its body, its reprs and one join of the prebuilt envelope
(:class:`~celeriac.protocol.template.MessageTemplate`), and hands the transport the envelope
bytes with the message, so that nothing per message is done twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.protocol.codec import BodyEncoder
from celeriac.protocol.message import safe_repr
from celeriac.protocol.template import MessageTemplate
from celeriac.routing import Queue
from celeriac.transports.base import Outgoing


@dataclass(frozen=True, slots=True)
class BatchSender:
    """Builds the messages of one task name in a batch, from what the batch's sends share."""

    encoder: BodyEncoder
    template: MessageTemplate
    exchange: str
    routing_key: str
    due_at: float | None
    queue: Queue | None

    def outgoing(
        self, task_id: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
    ) -> Outgoing:
        """One call's message, as ``Celeriac.prepare`` would build it, with its envelope."""
        # as prepare does: the reprs show a tuple and a dict whatever sequence came in
        args = args if type(args) is tuple else tuple(args or ())
        kwargs = kwargs if type(kwargs) is dict else dict(kwargs or {})
        body = self.encoder.encode(args, kwargs)
        message, wire = self.template.build(task_id, safe_repr(args), safe_repr(kwargs), body)
        return Outgoing(message, self.exchange, self.routing_key, self.due_at, wire)


__all__ = ["BatchSender"]
