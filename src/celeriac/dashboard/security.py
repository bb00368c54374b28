"""Headers every response carries, and the client address the audit log names.

A strict Content-Security-Policy (scripts, styles and connections from this origin only, no
inline script or style, no framing, no plugins, forms posting only here), ``X-Frame-Options:
DENY`` for browsers that predate ``frame-ancestors``, ``nosniff``, no referrer leaving the
site, pages never cached (they show live data and a CSRF token). Written as plain ASGI
middleware so that it also covers the server-sent event stream.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # not ``no-referrer``: under it a browser sends ``Origin: null`` with every form, and the
    # origin check of the actions (``web.py``) would refuse them all; ``same-origin`` still
    # keeps every referrer inside the site
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)


class SecurityHeaders:
    """Adds :data:`HEADERS` (and ``Cache-Control: no-store`` outside ``/static``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {h for h, _ in HEADERS}
                ]
                headers += HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def client_of(scope: Scope) -> str:
    """The peer address (behind a proxy: what uvicorn's ``--proxy-headers`` made of it)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
