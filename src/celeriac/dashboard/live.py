"""Live pages by server-sent events: ``GET /live?view=workers`` streams the page's live part,
rendered on the server exactly as the page rendered it, every ``live_interval`` seconds when it
changed. The page's script (``static/app.js``) puts each fragment in place: no client-side
templates, no JSON API to keep in step with the pages, and the fragments are escaped by the same
templates. The stream ends when the client leaves or the dashboard stops; the browser's
``EventSource`` reconnects by itself (``retry`` is sent first).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from celeriac.dashboard import views
from celeriac.dashboard.auth import OPERATOR
from celeriac.dashboard.runtime import Dashboard

if TYPE_CHECKING:
    from celeriac.dashboard.web import Web


def _workers(dashboard: Dashboard) -> dict[str, Any]:
    return {"workers": views.workers(dashboard)}


def _queues(dashboard: Dashboard) -> dict[str, Any]:
    return {
        "queues": views.queues(dashboard),
        "age_supported": dashboard.cluster.oldest_age_supported,
        "poll_error": dashboard.cluster.poll_error,
    }


#: View name -> what its live fragment needs.
VIEWS: dict[str, Callable[[Dashboard], dict[str, Any]]] = {
    "overview": views.overview,
    "workers": _workers,
    "queues": _queues,
}


def message(fragment_id: str, html: str) -> bytes:
    """One SSE message of type ``fragment`` (JSON data on one line)."""
    data = orjson.dumps({"id": fragment_id, "html": html}).decode()
    return f"event: fragment\ndata: {data}\n\n".encode()


async def stream(web: Web, request: Request) -> Response:
    view = request.query_params.get("view", "")
    build = VIEWS.get(view)
    if build is None:
        return PlainTextResponse(f"no live view {view!r}", 404)
    dashboard = web.dashboard
    session = request.state.session
    template = web.env.get_template(f"_{view}.html")
    base = {
        "session": session,
        "csrf": web.auth.csrf_token(session),
        "can_act": session.role == OPERATOR,
    }

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 3000\n\n"
        last = ""
        while not dashboard.stopping:
            context = await run_in_threadpool(build, dashboard)
            html = template.render(**base, **context)
            if html != last:
                last = html
                yield message(f"live-{view}", html)
            else:
                yield b": keep-alive\n\n"
            if await _left(request, dashboard.config.live_interval):
                return

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )


async def _left(request: Request, wait: float) -> bool:
    """Wait ``wait`` seconds; True as soon as the client disconnected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(min(0.25, max(0.0, deadline - loop.time())))
    return False
