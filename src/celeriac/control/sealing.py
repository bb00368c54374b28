"""Signed remote control: requests and replies signed, stale or replayed requests refused.

With signing on (``security_key``/``security_cert_store``, see :mod:`celeriac.app.security`), a
caller signs each request with a ``signed_at`` header (its clock, in whole UNIX seconds) among the
signed headers, and a worker that trusts a key ring obeys a request only when its signature is
good, its ``signed_at`` is within :data:`MAX_AGE` of the worker's clock, and the same signature
was not seen in that window: anyone who can publish to the broker can no longer revoke, shut
down or resize workers, nor replay a captured request later. Workers sign their replies; a
caller that verifies drops a reply that is unsigned or forged, with a warning.

The verifier and signer are passed in (they come from the ``auth`` bundle), so this module, like
the rest of the control layer, imports nothing from ``cryptography``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from celeriac.errors import DecodeError
from celeriac.protocol.message import SIGNATURE_HEADER, Message

if TYPE_CHECKING:
    from celeriac.protocol.signing import Signer, Verifier

logger = logging.getLogger("celeriac.control")

#: How far a request's ``signed_at`` may be from the worker's clock, in seconds, either way
#: (clocks of a fleet agree within this under NTP; a reply wait is seconds).
MAX_AGE = 60.0
#: Signatures remembered against replays, at most (a request is remembered for 2 x MAX_AGE).
REMEMBERED = 100_000


def seal_request(message: Message, signer: Signer | None) -> Message:
    """``message`` stamped with ``signed_at`` and signed, when this process signs."""
    if signer is None:
        return message
    # whole seconds: an int crosses every broker exactly (RabbitMQ's client sends floats in
    # single precision, 128 s apart at today's times)
    # and a nonce, so two like requests in one second are two requests, not a replay
    return signer.sign(message.with_headers(signed_at=int(time.time()), nonce=secrets.token_hex(8)))


def seal_reply(message: Message, signer: Signer | None) -> Message:
    """A reply, signed when this worker signs."""
    return message if signer is None else signer.sign(message)


class RequestGuard:
    """A worker's check of incoming requests: signature, freshness and no replay."""

    def __init__(self, verifier: Verifier, max_age: float = MAX_AGE) -> None:
        self.verifier = verifier
        self.max_age = max_age
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, message: Message, now: float | None = None) -> None:
        """Raise :class:`~celeriac.errors.DecodeError` (a SignatureError for a bad signature)
        saying why ``message`` must not be obeyed."""
        now = time.time() if now is None else now
        self.verifier.verify(message)
        signed_at = message.headers.get("signed_at")
        if not isinstance(signed_at, int | float) or isinstance(signed_at, bool):
            raise DecodeError("a signed control request without a signed_at time")
        if abs(now - signed_at) > self.max_age:
            raise DecodeError(
                f"a control request signed {now - signed_at:+.0f} s from now "
                f"(more than {self.max_age:.0f} s: stale, replayed or a clock off)"
            )
        self._forget(now)
        signature = str(message.headers.get(SIGNATURE_HEADER))
        if signature in self._seen:
            raise DecodeError("a control request seen before (a replay)")
        self._seen[signature] = now + 2 * self.max_age
        if len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

    def _forget(self, now: float) -> None:
        while self._seen:
            signature, until = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[signature]


def reply_is_trusted(message: Message, verifier: Verifier | None) -> bool:
    """Whether a caller may read ``message`` as a reply (always, when it does not verify)."""
    if verifier is None:
        return True
    try:
        verifier.verify(message)
    except DecodeError as exc:
        logger.warning("ignoring a control reply: %s", exc)
        return False
    return True
