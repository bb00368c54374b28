"""The dashboard's pages and actions, wired to URLs: :func:`create_app` is the ASGI app that
``celeriac dashboard`` serves (and that tests drive with Starlette's TestClient)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from celeriac.dashboard import deadletters, live, queries, views
from celeriac.dashboard.actions import Actor
from celeriac.dashboard.auth import Auth
from celeriac.dashboard.runtime import Dashboard
from celeriac.dashboard.web import Web, back, build


def _time(text: str) -> float | None:
    """A search's time bound: ``2024-05-01``, ``2024-05-01T12:00`` (UTC) or empty."""
    if not text.strip():
        return None
    try:
        found = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if found.tzinfo is None:
        found = found.replace(tzinfo=UTC)
    return found.timestamp()


def _int(text: str | None, default: int, low: int = 1, high: int = 1_000_000) -> int:
    try:
        return min(max(int(text or default), low), high)
    except ValueError:
        return default


class Pages:
    """Handlers, each a thin layer over :mod:`.views` and :mod:`.actions`."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.dashboard = web.dashboard

    # -- pages ------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        context = await run_in_threadpool(views.overview, self.dashboard)
        return self.web.render("overview.html", request, live="overview", **context)

    async def workers(self, request: Request) -> Response:
        rows = await run_in_threadpool(views.workers, self.dashboard)
        names = await run_in_threadpool(queries.task_names, self.dashboard.store)
        return self.web.render(
            "workers.html", request, live="workers", workers=rows, task_names=names
        )

    async def tasks(self, request: Request) -> Response:
        params = request.query_params
        found = queries.TaskFilter(
            id=params.get("id", ""),
            name=params.get("name", ""),
            state=params.get("state", ""),
            worker=params.get("worker", ""),
            args=params.get("args", ""),
            since=_time(params.get("since", "")),
            until=_time(params.get("until", "")),
        )
        page = _int(params.get("page"), 1)
        context = await run_in_threadpool(views.tasks, self.dashboard, found, page)
        query = {k: v for k, v in params.items() if k not in ("page", "done") and v}
        return self.web.render(
            "tasks.html",
            request,
            query=query,
            since=params.get("since", ""),
            until=params.get("until", ""),
            **context,
        )

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        context = await run_in_threadpool(views.task, self.dashboard, task_id)
        if context is None:
            return self.web.render("missing.html", request, 404, what=f"task {task_id}")
        return self.web.render("task.html", request, **context)

    async def queues(self, request: Request) -> Response:
        rows = await run_in_threadpool(views.queues, self.dashboard)
        return self.web.render(
            "queues.html",
            request,
            live="queues",
            queues=rows,
            age_supported=self.dashboard.cluster.oldest_age_supported,
            poll_error=self.dashboard.cluster.poll_error,
        )

    async def dead_letters(self, request: Request) -> Response:
        params = request.query_params
        names = self.dashboard.cluster.queue_names()
        queue = params.get("queue") or (names[0] if names else "celery")
        text, group = params.get("q", ""), params.get("reason", "")
        handled = await run_in_threadpool(self.dashboard.store.handled_letters, queue)
        error = None
        found: list[deadletters.Letter] = []
        try:

            async def read() -> list[deadletters.Letter]:
                transport = await self.dashboard.transport()
                return await deadletters.letters(transport, queue, handled)

            found = await self.dashboard.call(read())
        except Exception as exc:
            error = f"{type(exc).__name__}: {self.dashboard.redact(str(exc))}"
        shown = [item for item in found if item.matches(text, group)]
        return self.web.render(
            "dead_letters.html",
            request,
            queue=queue,
            queue_names=names if queue in names else [*names, queue],
            groups=deadletters.groups(found),
            letters=shown[:500],
            total=len(found),
            matching=len(shown),
            q=text,
            reason=group,
            error=error,
        )

    async def beat(self, request: Request) -> Response:
        def read() -> dict[str, Any]:
            api = self.dashboard.app.beat
            entries = api.list()
            runs = api.runs()
            rows = []
            for entry in entries:
                try:
                    upcoming = views.when(api.next_run(entry).timestamp())
                except Exception as exc:
                    upcoming = f"? ({exc})"
                last = runs.get(entry.name)
                rows.append(
                    {
                        "name": entry.name,
                        "task": entry.task,
                        "schedule": repr(entry.schedule),
                        "paused": entry.paused,
                        "next": "" if entry.paused else upcoming,
                        "last": views.when(last.timestamp()) if last else "",
                        "origin": entry.origin,
                    }
                )
            return {"entries": rows}

        try:
            context = await run_in_threadpool(read)
            error = None
        except Exception as exc:
            context = {"entries": []}
            error = f"{type(exc).__name__}: {self.dashboard.redact(str(exc))}"
        return self.web.render("beat.html", request, error=error, **context)

    async def audit(self, request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1)
        context = await run_in_threadpool(views.audit, self.dashboard, page)
        return self.web.render("audit.html", request, **context)

    async def stream(self, request: Request) -> Response:
        return await live.stream(self.web, request)

    # -- actions ----------------------------------------------------------------------------
    async def retry(self, request: Request, form: dict[str, str], actor: Actor) -> Response:
        task_id = request.path_params["task_id"]
        out = await run_in_threadpool(self.web.actions.retry, actor, task_id)
        return back(f"/tasks/{task_id}", out)

    async def revoke(self, request: Request, form: dict[str, str], actor: Actor) -> Response:
        task_id = request.path_params["task_id"]
        terminate = form.get("terminate") == "1"
        signal = form.get("signal", "SIGTERM") or "SIGTERM"
        out = await run_in_threadpool(self.web.actions.revoke, actor, task_id, terminate, signal)
        return back(f"/tasks/{task_id}", out)

    async def rate_limit(self, request: Request, form: dict[str, str], actor: Actor) -> Response:
        out = await run_in_threadpool(
            self.web.actions.rate_limit, actor, form.get("task", "").strip(), form.get("rate", "")
        )
        return back("/workers", out)

    async def pool(self, request: Request, form: dict[str, str], actor: Actor) -> Response:
        n = _int(form.get("n"), 1, 1, 100)
        grow = form.get("change") == "grow"
        out = await run_in_threadpool(
            self.web.actions.pool, actor, form.get("hostname", ""), grow, n
        )
        return back("/workers", out)

    async def purge(self, request: Request, form: dict[str, str], actor: Actor) -> Response:
        queue = form.get("queue", "")
        if not queue:
            return PlainTextResponse("which queue?", 400)
        out = await self.web.actions.purge(actor, queue)
        return back("/queues", out)

    async def handle_letters(
        self, request: Request, form: dict[str, str], actor: Actor
    ) -> Response:
        queue = form.get("queue", "")
        selected = [s for s in form.get("selected", "").split(",") if s]
        out = await self.web.actions.dead_letters(
            actor,
            queue,
            form.get("action", ""),
            selected,
            form.get("q", ""),
            form.get("reason", ""),
            form.get("scope") == "matching",
        )
        return back(f"/dead-letters?{urlencode({'queue': queue})}", out)

    async def beat_action(self, request: Request, form: dict[str, str], actor: Actor) -> Response:
        name = request.path_params["name"]
        action = request.path_params["action"]
        out = await run_in_threadpool(self.web.actions.beat, actor, name, action)
        return back("/beat", out)


def create_app(dashboard: Dashboard, auth: Auth) -> Starlette:
    """The dashboard's ASGI app; the server's start and stop start and stop ``dashboard``."""
    web = Web(dashboard, auth)
    pages = Pages(web)
    page, action = web.page, web.action
    routes: list[Route | Mount] = [
        Route("/", page(pages.overview)),
        Route("/workers", page(pages.workers)),
        Route("/tasks", page(pages.tasks)),
        Route("/tasks/{task_id}", page(pages.task)),
        Route("/queues", page(pages.queues)),
        Route("/dead-letters", page(pages.dead_letters)),
        Route("/beat", page(pages.beat)),
        Route("/audit", page(pages.audit)),
        Route("/live", page(pages.stream)),
        Route("/login", web.login_page, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", action(web.logout, operator=False), methods=["POST"]),
        Route("/healthz", web.healthz),
        Route("/metrics", web.metrics),
        Route("/tasks/{task_id}/retry", action(pages.retry), methods=["POST"]),
        Route("/tasks/{task_id}/revoke", action(pages.revoke), methods=["POST"]),
        Route("/rate-limit", action(pages.rate_limit), methods=["POST"]),
        Route("/workers/pool", action(pages.pool), methods=["POST"]),
        Route("/queues/purge", action(pages.purge), methods=["POST"]),
        Route("/dead-letters", action(pages.handle_letters), methods=["POST"]),
        Route("/beat/{name}/{action}", action(pages.beat_action), methods=["POST"]),
    ]
    return build(web, routes)
