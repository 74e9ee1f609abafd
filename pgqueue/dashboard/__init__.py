"""The web dashboard: ``pgqueue dashboard``, or ``create_app`` mounted in an ASGI service.

Needs the ``pgqueue-tasks[dashboard]`` extra (Starlette, Jinja2, uvicorn). Pages
(:mod:`.pages`) read through :mod:`.data`; actions (:mod:`.actions`) are guarded by
:mod:`.security`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from ..app import PgQueue
from ..db import describe_error
from ..exceptions import ConfigurationError, PgQueueError
from ..ops import OpsError
from ..sensitive import Sensitive
from . import actions, pages
from .server import LocalHostsOnly, is_loopback, serve
from .site import HERE, Site
from .timing import ServerTiming

__all__ = ["LocalHostsOnly", "create_app", "is_loopback", "serve"]


def create_app(
    app: PgQueue | str,
    *,
    allow_actions: bool = False,
    token: str | None = None,
    prefix: str = "",
    sensitive: Sequence[str] = (),
    refresh: float = 2.0,
) -> Starlette:
    """The dashboard as an ASGI application, on the database of ``app`` (a PgQueue, or a
    DSN).

    ``allow_actions`` turns on retry, revoke, purge, pause/resume and the periodic-task
    switches; with ``token`` set each needs it (a form field or the ``X-PgQueue-Token``
    header), without one the mounting application's authentication is all that guards
    them. ``prefix`` serves every page under a path (``"/queue"``); mounted with
    Starlette's ``Mount`` (or any ASGI router setting ``root_path``) it needs none.
    ``sensitive`` names tasks (glob patterns) whose arguments are never shown nor searched,
    as are those of tasks declared ``@app.task(sensitive=True)``. Pages refresh their live
    parts every ``refresh`` seconds.
    """
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ConfigurationError(
            f"dashboard prefix {prefix!r}: give a path starting with / and not ending with "
            "one, e.g. '/queue'"
        )
    if refresh < 0.2:
        raise ConfigurationError(f"dashboard refresh {refresh!r}: at least 0.2 seconds")
    if token is not None and len(token) < 8:
        raise ConfigurationError("a dashboard token needs at least 8 characters")
    pgqueue_app = app if isinstance(app, PgQueue) else PgQueue(dsn=app)
    site = Site(pgqueue_app, allow_actions, token, Sensitive(tuple(sensitive)), refresh)
    routes: list[BaseRoute] = [
        *pages.routes(site),
        *actions.routes(site),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    if prefix:
        routes = [Mount(prefix, routes=routes)]

    def bad_request(request: Request, exc: Exception) -> Response:
        return site.render(request, "error.html", status_code=400, message=str(exc))

    def unavailable(request: Request, exc: Exception) -> Response:
        return site.render(request, "error.html", status_code=503, message=str(exc))

    def refused(request: Request, exc: Exception) -> Response:
        if getattr(exc, "sqlstate", None) == "42501":  # insufficient_privilege
            return site.render(
                request,
                "error.html",
                status_code=403,
                message=f"{describe_error(exc)}: the dashboard's database role may not read "
                "this; connect it as a member of the operator role (`pgqueue roles`)",
            )
        return site.render(
            request,
            "error.html",
            status_code=503,
            message=f"the database refused a statement: {describe_error(exc)}",
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        site.connections.close()

    handlers: Any = {OpsError: bad_request, PgQueueError: unavailable, psycopg.Error: refused}
    dashboard = Starlette(
        routes=routes,
        exception_handlers=handlers,
        lifespan=lifespan,
        middleware=[Middleware(ServerTiming)],
    )
    dashboard.state.site = site
    return dashboard
