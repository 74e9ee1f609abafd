"""The dashboard's actions: retry, revoke (and terminate), purge a queue, pause and resume
a queue, enable, disable and run a periodic task.

Each is a page asking for confirmation (GET ``/confirm/<action>``) and a POST
(``/actions/<action>``) checked by :mod:`.security`, done by the same library code as the
command line (``pgqueue.ops``, ``app.control``, ``pgqueue.beat``), then back to the page it
came from with a one-line notice of what happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .. import beat, ops, queue_controls, states
from ..exceptions import PgQueueError
from . import security
from .site import NOTICE_COOKIE, Site

Params = Mapping[str, str]


@dataclass(frozen=True)
class Action:
    """One action: what the confirmation asks, and what doing it does (returning the
    notice shown after)."""

    title: str
    target: str  # what its target names: "job", "queue" or "periodic task"
    question: Callable[[Site, psycopg.Connection[Any], Params], str]
    perform: Callable[[Site, psycopg.Connection[Any], Params], str]


def _retry(site: Site, conn: psycopg.Connection[Any], p: Params) -> str:
    report = ops.retry_ids(conn, [p["target"]], retry_states=(states.FAILURE, states.REVOKED))
    if report.done:
        return f"job {p['target']} queued again"
    return f"job {p['target']} not retried: {report.skipped.get(p['target'], 'no such job')}"


def _revoke(site: Site, conn: psycopg.Connection[Any], p: Params) -> str:
    report = ops.revoke(site.app, [p["target"]], terminate=_terminate(p))
    if report.done:
        return f"job {p['target']} revoked" + (" and terminated" if _terminate(p) else "")
    return f"job {p['target']} not revoked: {report.skipped.get(p['target'], 'no such job')}"


def _purge(site: Site, conn: psycopg.Connection[Any], p: Params) -> str:
    deleted = ops.purge(conn, ops.JobFilter(queues=(p["target"],)))
    return f"purged {deleted} queued job(s) from queue {p['target']}"


def _purge_question(site: Site, conn: psycopg.Connection[Any], p: Params) -> str:
    count = ops.count_purgeable(conn, ops.JobFilter(queues=(p["target"],)))
    return (
        f"Delete the {count} queued job(s) (PENDING and RETRY, not claimed) of queue "
        f"{p['target']}? They leave no result. Claimed and running jobs are kept."
    )


def _pause(paused: bool) -> Callable[[Site, psycopg.Connection[Any], Params], str]:
    def perform(site: Site, conn: psycopg.Connection[Any], p: Params) -> str:
        change = queue_controls.pause_queue if paused else queue_controls.resume_queue
        done = "paused" if paused else "resumed"
        if change(conn, p["target"]):
            return f"queue {p['target']} {done}"
        return f"queue {p['target']} was {'paused already' if paused else 'not paused'}"

    return perform


def _enable(enabled: bool) -> Callable[[Site, psycopg.Connection[Any], Params], str]:
    def perform(site: Site, conn: psycopg.Connection[Any], p: Params) -> str:
        beat.set_enabled(conn, p["target"], enabled)
        return f"periodic task {p['target']} {'enabled' if enabled else 'disabled'}"

    return perform


def _run_now(site: Site, conn: psycopg.Connection[Any], p: Params) -> str:
    sent = beat.run_now(site.app, conn, p["target"])
    return f"periodic task {p['target']} sent now as job {sent.id}"


def _terminate(p: Params) -> bool:
    return p.get("terminate") in ("1", "on", "true")


def _asks(text: str) -> Callable[[Site, psycopg.Connection[Any], Params], str]:
    return lambda site, conn, p: text.format(target=p["target"])


ACTIONS: dict[str, Action] = {
    "retry": Action(
        "Retry job", "job",
        _asks("Queue job {target} again, under the same id, with its task, queue and "
              "arguments and a fresh retry budget?"),
        _retry,
    ),
    "revoke": Action(
        "Revoke job", "job",
        lambda site, conn, p: (
            f"Revoke job {p['target']}"
            + (" and stop it where it runs" if _terminate(p) else "")
            + "? It ends REVOKED"
            + ("." if _terminate(p) else "; a running job is left to finish (use terminate).")
        ),
        _revoke,
    ),
    "purge": Action("Purge queue", "queue", _purge_question, _purge),
    "pause": Action(
        "Pause queue", "queue",
        _asks("Pause queue {target}? Workers stop claiming its jobs (running ones finish, "
              "and jobs already claimed into a worker's buffer still run); enqueueing goes on."),
        _pause(True),
    ),
    "resume": Action(
        "Resume queue", "queue", _asks("Resume queue {target}?"), _pause(False)
    ),
    "enable": Action(
        "Enable periodic task", "periodic task",
        _asks("Enable periodic task {target}? It restarts from now (no catch-up)."),
        _enable(True),
    ),
    "disable": Action(
        "Disable periodic task", "periodic task",
        _asks("Disable periodic task {target}? Beat sends no more of its ticks until enabled."),
        _enable(False),
    ),
    "run": Action(
        "Run periodic task now", "periodic task",
        _asks("Send periodic task {target}'s job now, outside its schedule?"),
        _run_now,
    ),
}  # fmt: skip


def _params(site: Site, source: Mapping[str, Any]) -> dict[str, str]:
    target = str(source.get("target") or "").strip()
    return {"target": target, "terminate": str(source.get("terminate") or "")}


def _check_target(action: Action, target: str) -> None:
    if not target:
        raise ops.OpsError(f"say which {action.target}: the request names none")
    if action.target == "job":
        try:
            uuid.UUID(target)
        except ValueError:
            raise ops.OpsError(f"{target!r} is not a job id (a UUID)") from None


def _next(request: Request, given: str | None) -> str:
    """Where to go after the action: a page of this dashboard, never another site."""
    base = request.scope.get("root_path") or ""
    # Browsers drop tabs and newlines from a URL and read a backslash as a slash: a path
    # holding any of them could become //other.site.
    given = given or ""
    plain = given.isprintable() and " " not in given and "\\" not in given
    if plain and given.startswith(base + "/") and not given.startswith("//"):
        return given
    return base + "/"


def routes(site: Site) -> list[Route]:
    """The actions' routes, bound to ``site``."""

    def confirm(request: Request) -> Response:
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return site.render(request, "error.html", status_code=404, message="no such action")
        params = _params(site, request.query_params)
        _check_target(action, params["target"])
        with site.connections.connection() as conn:
            question = action.question(site, conn, params)
        return site.render(
            request,
            "confirm.html",
            action=action,
            name=request.path_params["action"],
            question=question,
            params=params,
            next=_next(request, request.query_params.get("next")),
            needs_token=not security.has_session(request, site.token),
        )

    async def perform(request: Request) -> Response:
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return site.render(request, "error.html", status_code=404, message="no such action")
        form = await _form(request)
        try:
            typed_token = security.check_action(
                request, form, allowed=site.allow_actions, token=site.token
            )
        except security.Refused as exc:
            return site.render(request, "error.html", status_code=403, message=str(exc))
        params = _params(site, form)
        _check_target(action, params["target"])
        notice = await _run(site, action, params)
        response = RedirectResponse(_next(request, form.get("next")), status_code=303)
        base = request.scope.get("root_path") or ""
        response.set_cookie(
            NOTICE_COOKIE, quote(notice), path=base + "/", httponly=True, samesite="strict"
        )
        if typed_token and site.token is not None:
            security.remember_session(request, response, site.token)
        return response

    return [
        Route("/confirm/{action}", confirm, name="confirm"),
        Route("/actions/{action}", perform, methods=["POST"], name="action"),
    ]


async def _form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form (the only kind the dashboard's forms send); read
    here rather than through python-multipart, which the dashboard would need for nothing
    else."""
    body = await request.body()
    if len(body) > 64 * 1024:
        raise ops.OpsError("an action's form holds a few short fields, not this much")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def _run(site: Site, action: Action, params: Params) -> str:
    def work() -> str:
        with site.connections.connection() as conn:
            try:
                return action.perform(site, conn, params)
            except PgQueueError as exc:
                return f"{action.title.lower()} failed: {exc}"
            except psycopg.Error as exc:
                if getattr(exc, "sqlstate", None) != "42501":  # insufficient_privilege
                    raise
                return (
                    f"{action.title.lower()} failed: the dashboard's database role may not do "
                    "this (connect it as a member of the operator role: `pgqueue roles`)"
                )

    return await run_in_threadpool(work)
