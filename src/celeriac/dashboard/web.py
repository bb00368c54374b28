"""The ASGI app: Starlette routes, the login, the role and CSRF checks of every action.

Every page needs a session (a signed cookie from ``/login``) or a bearer token; without one a
page redirects to the login and anything else answers 401. Every POST is an action: it needs a
valid CSRF token (form field ``csrf`` or header ``X-CSRF-Token``; a bearer token needs none,
since no browser sends one on its own), an ``Origin`` of this site when the browser sends one,
and the ``operator`` role: a ``viewer`` gets 403. An action redirects back to its page, which
shows the outcome from the audit log (``?done=<entry>``), so no page ever echoes text from a
query string. ``/healthz`` is open (a liveness probe); ``/metrics`` is open only with
``--public-metrics``.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from celeriac.dashboard import views
from celeriac.dashboard.actions import Actions, Actor, Outcome
from celeriac.dashboard.auth import OPERATOR, Auth, Session
from celeriac.dashboard.runtime import Dashboard
from celeriac.dashboard.security import SecurityHeaders, client_of

#: A task id an outcome names (a retry, a beat entry run now): the flash links to it.
SENT_AS = re.compile(r"sent (?:again )?as ([0-9a-f-]{36})")
SESSION_COOKIE = "celeriac_session"
LOGIN_COOKIE = "celeriac_login"
MAX_FORM = 1 << 20
Handler = Callable[[Request], Awaitable[Response]]
ActionHandler = Callable[[Request, dict[str, str], Actor], Awaitable[Response]]


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("celeriac.dashboard", "templates"),
        autoescape=select_autoescape(("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = views.when
    env.filters["ago"] = views.ago
    env.filters["seconds"] = views.seconds
    return env


class Web:
    """The routes of one dashboard (see the module docstring)."""

    def __init__(self, dashboard: Dashboard, auth: Auth) -> None:
        self.dashboard = dashboard
        self.auth = auth
        self.actions = Actions(dashboard)
        self.env = templates()
        self.secure = dashboard.config.secure_cookies

    # -- rendering --------------------------------------------------------------------------
    def render(self, name: str, request: Request, status: int = 200, **context: Any) -> Response:
        session: Session | None = getattr(request.state, "session", None)
        context.setdefault("session", session)
        context.setdefault("csrf", self.auth.csrf_token(session) if session else "")
        context.setdefault("can_act", session is not None and session.role == OPERATOR)
        context.setdefault("path", request.url.path)
        context.update(views.header(self.dashboard))
        done = request.query_params.get("done", "")
        if done.isdigit() and "flash" not in context:
            entry = self.dashboard.store.audit_entry(int(done))
            if entry is not None and time.time() - entry["at"] < 600:
                context["flash"] = dict(entry)
                sent = SENT_AS.search(entry["outcome"])
                context["flash_task"] = sent.group(1) if sent else None
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status)

    # -- who is asking ----------------------------------------------------------------------
    def session_of(self, request: Request) -> Session | None:
        role = self.auth.bearer(request.headers.get("authorization"))
        if role is not None:
            return Session(role, "bearer", time.time() + 60)
        return self.auth.session(request.cookies.get(SESSION_COOKIE))

    def page(self, handler: Handler) -> Handler:
        """A page: a session is needed (else the login, or 401 for non-HTML clients)."""

        async def guarded(request: Request) -> Response:
            session = self.session_of(request)
            if session is None:
                if "text/html" in request.headers.get("accept", "") or request.method == "GET":
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(f"/login?{urlencode({'next': target})}", 303)
                return PlainTextResponse("login required", 401)
            request.state.session = session
            return await handler(request)

        return guarded

    def action(self, handler: ActionHandler, *, operator: bool = True) -> Handler:
        """An action: a session, the CSRF token, this site's origin, the operator role (unless
        ``operator`` is False: logging out)."""

        async def guarded(request: Request) -> Response:
            session = self.session_of(request)
            if session is None:
                return PlainTextResponse("login required", 401)
            request.state.session = session
            form = await read_form(request)
            if form is None:
                return PlainTextResponse("expected a form (at most 1 MiB)", 400)
            if session.nonce != "bearer":
                origin = request.headers.get("origin")
                if origin is not None and origin != _origin(request):
                    return PlainTextResponse("cross-site request refused", 403)
                given = form.get("csrf") or request.headers.get("x-csrf-token")
                if not self.auth.check_csrf(session, given):
                    return PlainTextResponse("missing or wrong CSRF token", 403)
            if operator and session.role != OPERATOR:
                return PlainTextResponse("read-only: this role cannot act", 403)
            actor = Actor(f"{session.role}@{client_of(request.scope)}", session.role)
            return await handler(request, form, actor)

        return guarded

    # -- login ------------------------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        return self._login_form(request, "", request.query_params.get("next", "/"), 200)

    def _login_form(self, request: Request, error: str, target: str, status: int) -> Response:
        nonce = secrets.token_urlsafe(16)
        response = self.render(
            "login.html",
            request,
            status,
            session=None,
            error=error,
            login_csrf=self.auth.login_token(nonce),
            next=_local(target),
        )
        self._cookie(response, LOGIN_COOKIE, nonce, 900)
        return response

    async def login(self, request: Request) -> Response:
        form = await read_form(request)
        if form is None:
            return PlainTextResponse("expected a form", 400)
        target = _local(form.get("next", "/"))
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not secrets.compare_digest(
            form.get("csrf", ""), self.auth.login_token(nonce)
        ):
            return self._login_form(request, "The form expired: try again.", target, 403)
        client = client_of(request.scope)
        if self.auth.throttled(client):
            return self._login_form(request, "Too many attempts: wait a minute.", target, 429)
        role = await run_in_threadpool(self.auth.role_for, form.get("secret", ""))
        if role is None:
            self.auth.failed(client)
            return self._login_form(request, "Wrong password or token.", target, 401)
        response = RedirectResponse(target, 303)
        self._cookie(response, SESSION_COOKIE, self.auth.issue(role), int(self.auth.session_ttl))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: Request, form: dict[str, str], actor: Actor) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def _cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )

    # -- open endpoints ---------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(self, request: Request) -> Response:
        if not self.dashboard.config.public_metrics and self.session_of(request) is None:
            return PlainTextResponse("login required", 401)
        body = await run_in_threadpool(self.dashboard.metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form body as ``{field: last value}`` (``selected`` fields joined with
    ``,``), or None when it is not one or too large."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=5000)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: ",".join(v) if k == "selected" else v[-1] for k, v in fields.items()}


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _local(target: str) -> str:
    """A path on this site only (never ``//host`` or ``https://...``): no open redirect."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def back(to: str, outcome: Outcome) -> Response:
    """Redirect to ``to`` (or where the outcome says), showing the outcome's audit entry."""
    target = outcome.location or to
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{_local(target)}{sep}done={outcome.audit_id}", 303)


def build(web: Web, routes: list[Route | Mount]) -> Starlette:
    """The Starlette app over ``routes``, with security headers; starts and stops the
    dashboard with the server."""
    dashboard = web.dashboard

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await run_in_threadpool(dashboard.start)
        try:
            yield
        finally:
            await run_in_threadpool(dashboard.stop)

    static = StaticFiles(packages=[("celeriac.dashboard", "static")])
    app = Starlette(routes=[*routes, Mount("/static", static, name="static")], lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    return app
