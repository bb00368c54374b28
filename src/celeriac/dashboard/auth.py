"""Who may use the dashboard: secrets, roles, signed session cookies and CSRF tokens.

Flower runs unauthenticated unless told otherwise (CVE-2022-30034). Here a login is always
required. Two roles: ``operator`` (may act) and ``viewer`` (read-only: every action answers 403).
Each role has a secret: a password hash (``scrypt$...`` from ``celeriac dashboard
--hash-password``, or Django's ``pbkdf2_sha256$...``) or a token, from the environment:

======================================== ==============================================
``CELERIAC_DASHBOARD_PASSWORD_HASH``     the operator's password, hashed
``CELERIAC_DASHBOARD_TOKEN``             the operator's token (also ``Authorization: Bearer``)
``CELERIAC_DASHBOARD_READONLY_PASSWORD_HASH`` / ``..._READONLY_TOKEN``  the viewer's
``CELERIAC_DASHBOARD_SECRET``            the key that signs sessions (random per start if unset:
                                         sessions then end when the dashboard restarts)
======================================== ==============================================

With no operator secret at all, a random token is made and printed at start. A session is a
cookie signed with HMAC-SHA256 (role, expiry, a nonce); its key also covers the secrets, so
changing a password ends every session. The CSRF token of a session is an HMAC of its nonce:
every POST must carry it (form field ``csrf`` or header ``X-CSRF-Token``), and the login form
carries a double-submit token of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

import orjson

from celeriac.errors import ImproperlyConfigured

OPERATOR = "operator"
VIEWER = "viewer"
ROLES = (OPERATOR, VIEWER)
ENV_PREFIX = "CELERIAC_DASHBOARD_"
#: scrypt's cost for new hashes (N=2^15, r=8, p=1: ~50 ms and 32 MiB, OWASP's minimum).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A scrypt hash of ``password``: ``scrypt$N$r$p$salt$hash`` (base64 without padding)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=2**26, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_hash_format(encoded: str, setting: str) -> None:
    """Fail naming ``setting`` unless ``encoded`` is a hash this module can check."""
    parts = encoded.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            if n < 2 or n & (n - 1) or r < 1 or p < 1:
                raise ValueError("bad scrypt cost")
            _unb64(parts[4]), _unb64(parts[5])
            return
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if int(parts[1]) < 1:
                raise ValueError("bad iterations")
            base64.b64decode(parts[3], validate=True)
            return
    except (ValueError, TypeError):
        pass
    raise ImproperlyConfigured(
        f"{setting}: not a password hash (expected scrypt$N$r$p$salt$hash from"
        " 'celeriac dashboard --hash-password', or pbkdf2_sha256$iterations$salt$hash)"
    )


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time comparison)."""
    parts = encoded.split("$")
    if parts[0] == "scrypt" and len(parts) == 6:
        n, r, p = (int(x) for x in parts[1:4])
        expected = _unb64(parts[5])
        digest = hashlib.scrypt(
            password.encode(),
            salt=_unb64(parts[4]),
            n=n,
            r=r,
            p=p,
            maxmem=max(2**26, 256 * n * r),
            dklen=len(expected),
        )
        return hmac.compare_digest(digest, expected)
    if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
        expected = base64.b64decode(parts[3])
        digest = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), parts[2].encode(), int(parts[1]), len(expected)
        )
        return hmac.compare_digest(digest, expected)
    return False


@dataclass(frozen=True)
class Secret:
    """One role's secret: a password hash, or a token (compared as it is)."""

    role: str
    password_hash: str | None = None
    token: str | None = None

    def matches(self, given: str) -> bool:
        if not given:
            return False
        ok = False
        if self.token is not None:
            ok = hmac.compare_digest(given.encode(), self.token.encode())
        if not ok and self.password_hash is not None:
            ok = verify_password(given, self.password_hash)
        return ok

    def fingerprint(self) -> bytes:
        return f"{self.role}|{self.password_hash or ''}|{self.token or ''}".encode()


@dataclass(frozen=True)
class Session:
    role: str
    nonce: str
    expires: float


class Auth:
    """The secrets of both roles and the key that signs sessions."""

    def __init__(
        self,
        secrets_: list[Secret],
        key: bytes | None = None,
        *,
        session_ttl: float = 12 * 3600.0,
        generated_token: str | None = None,
    ) -> None:
        if not any(s.role == OPERATOR for s in secrets_):
            raise ImproperlyConfigured("the dashboard needs an operator secret")
        self.secrets = secrets_
        base = key or secrets.token_bytes(32)
        self._key = hmac.new(base, b"".join(s.fingerprint() for s in secrets_), "sha256").digest()
        self.session_ttl = session_ttl
        #: The token made at start when no operator secret was set (printed once).
        self.generated_token = generated_token
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Auth:
        """Secrets from ``CELERIAC_DASHBOARD_*`` (see the module docstring); a hash that is not
        one fails naming its variable."""
        env = dict(os.environ if environ is None else environ)

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or None

        found: list[Secret] = []
        for role, prefix in ((OPERATOR, ""), (VIEWER, "READONLY_")):
            hashed, token = get(prefix + "PASSWORD_HASH"), get(prefix + "TOKEN")
            if hashed is not None:
                check_hash_format(hashed, ENV_PREFIX + prefix + "PASSWORD_HASH")
            if token is not None and len(token) < 16:
                raise ImproperlyConfigured(
                    f"{ENV_PREFIX}{prefix}TOKEN: a token must have at least 16 characters"
                )
            if hashed or token:
                found.append(Secret(role, hashed, token))
        generated = None
        if not any(s.role == OPERATOR for s in found):
            generated = secrets.token_urlsafe(24)
            found.insert(0, Secret(OPERATOR, token=generated))
        key_text = get("SECRET")
        key = key_text.encode() if key_text else None
        return cls(found, key, generated_token=generated)

    # -- logging in -------------------------------------------------------------------------
    def role_for(self, given: str) -> str | None:
        """The role whose secret ``given`` is (the operator's first), or None."""
        for secret in self.secrets:
            if secret.matches(given):
                return secret.role
        return None

    def throttled(self, client: str, now: float | None = None) -> bool:
        """True after 10 failed logins from ``client`` within a minute."""
        at = time.time() if now is None else now
        with self._lock:
            recent = self._failures.get(client)
            if recent is None:
                return False
            while recent and recent[0] < at - 60:
                recent.popleft()
            return len(recent) >= 10

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures.setdefault(client, deque(maxlen=20)).append(time.time())

    # -- sessions ---------------------------------------------------------------------------
    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, "sha256").digest())

    def issue(self, role: str) -> str:
        """A session cookie value for ``role``."""
        data = {"r": role, "n": secrets.token_urlsafe(16), "e": time.time() + self.session_ttl}
        payload = orjson.dumps(data)
        return f"{_b64(payload)}.{self._sign(payload)}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if it is signed here and not expired."""
        if not cookie or "." not in cookie:
            return None
        body, signature = cookie.rsplit(".", 1)
        try:
            payload = _unb64(body)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = orjson.loads(payload)
            found = Session(str(data["r"]), str(data["n"]), float(data["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if found.role not in ROLES or found.expires < time.time():
            return None
        return found

    def bearer(self, header: str | None) -> str | None:
        """The role of an ``Authorization: Bearer <token>`` header (tokens only, no hashes)."""
        if not header or not header.lower().startswith("bearer "):
            return None
        given = header[7:].strip()
        for secret in self.secrets:
            if secret.token is not None and hmac.compare_digest(
                given.encode(), secret.token.encode()
            ):
                return secret.role
        return None

    # -- CSRF -------------------------------------------------------------------------------
    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf|{session.nonce}".encode())

    def check_csrf(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf_token(session))

    def login_token(self, nonce: str) -> str:
        """The login form's CSRF token for the pre-login nonce cookie."""
        return self._sign(f"login|{nonce}".encode())
