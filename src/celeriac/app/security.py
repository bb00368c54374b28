"""An app's message security, read from its settings: who signs what it sends, whom it trusts.

Signing is on when ``security_key`` is set: every task message this process publishes, every
remote-control request and every control reply is signed with it. Verifying is on when
``security_cert_store`` is set: a worker then runs only task messages signed by a trusted key
(anything else is dead-lettered with the reason), obeys only signed, fresh control requests, and
a caller reads only signed replies. A worker that sends (retries, chains, chords, subtasks) needs
a ``security_key`` of its own, like any producer.

The keys are loaded once per settings change, and only when signing is configured, so
``cryptography`` (the ``auth`` bundle) is needed by those who sign and by nobody else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from celeriac.errors import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app.config import Settings
    from celeriac.protocol.signing import Signer, Verifier


@dataclass(frozen=True)
class Security:
    """The signer of what this process sends and the verifier of what it receives (each may
    be None: a producer that only signs, a worker that only verifies)."""

    signer: Signer | None
    verifier: Verifier | None


def load_security(conf: Settings) -> Security | None:
    """The :class:`Security` that ``conf`` asks for, or None when it asks for no signing."""
    if not conf.security_key and not conf.security_cert_store:
        return None
    try:
        from celeriac.protocol import keys, signing
    except ImportError as exc:  # cryptography is the auth bundle's
        setting = "security_key" if conf.security_key else "security_cert_store"
        raise ImproperlyConfigured(
            f"setting {setting!r}: signed messages need the auth bundle "
            f"(pip install 'celeriac[auth]'): {exc}"
        ) from None
    signer = None
    if conf.security_key:
        private = keys.load_private_key(conf.security_key, conf.security_key_password)
        signer = signing.Signer(private)
        if conf.security_certificate:
            own = keys.load_public_keys(conf.security_certificate, setting="security_certificate")
            if signing.key_id(own[0]) != signer.kid:
                raise ImproperlyConfigured(
                    "setting 'security_certificate': its key is not the public half of "
                    f"security_key (key ids {signing.key_id(own[0])} and {signer.kid})"
                )
    verifier = None
    if conf.security_cert_store:
        verifier = signing.Verifier.of(keys.load_public_keys(conf.security_cert_store))
    return Security(signer, verifier)
