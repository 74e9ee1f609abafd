"""Who may change anything through the dashboard, and proof that a change was asked for
on one of its own pages.

- Actions are off unless the dashboard was created with ``allow_actions``.
- With a token set, an action needs it: the ``X-PgQueue-Token`` header (scripts), or the
  ``token`` field of the confirmation form, after which a cookie holding a keyed hash of the
  token (never the token) stands for it. With no token, the mounting application's own
  authentication is all there is: mount it behind that.
- Every action is a POST that carries the CSRF token of a double-submit cookie in its form
  (or is made with the ``X-PgQueue-Token`` header, which a cross-site form cannot send), and
  whose ``Origin``, when the browser sends one, is this dashboard's own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

CSRF_COOKIE = "pgqueue_csrf"
SESSION_COOKIE = "pgqueue_session"
TOKEN_HEADER = "x-pgqueue-token"


class Refused(Exception):
    """An action request that may not be done, with the reason shown to the user."""


def csrf_token(request: Request) -> str:
    """The request's CSRF cookie value, or a new one (set by :func:`remember_csrf`)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) >= 32:
        return current
    token: str = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(32))
    return token


def remember_csrf(request: Request, response: Response) -> None:
    """Set the CSRF cookie a page's forms were rendered with, when it is a new one."""
    new = request.state.__dict__.get("new_csrf")
    if new:
        _set_cookie(request, response, CSRF_COOKIE, new)


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    # Scoped to the dashboard's own path, unreadable by scripts, never sent cross-site.
    response.set_cookie(
        name,
        value,
        path=(request.scope.get("root_path") or "") + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def session_value(token: str) -> str:
    """What the session cookie holds for ``token``: a keyed hash, useless as the token."""
    return hmac.new(token.encode(), b"pgqueue dashboard session", hashlib.sha256).hexdigest()


def check_action(
    request: Request, form: Mapping[str, str], *, allowed: bool, token: str | None
) -> bool:
    """Refuse the action unless it may be done; returns whether the token was given in
    the form just now (so that the session cookie is set)."""
    if not allowed:
        raise Refused(
            "actions are off: start the dashboard with --allow-actions (create_app("
            "allow_actions=True)) to retry, revoke, purge and edit from here"
        )
    header = request.headers.get(TOKEN_HEADER)
    if header is not None and token is not None:
        # A script's request: a cross-site form cannot set a header, so the token alone
        # is the proof.
        if hmac.compare_digest(header.encode(), token.encode()):
            return False
        raise Refused("wrong token in the X-PgQueue-Token header")
    _check_origin(request)
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = form.get("csrf", "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Refused(
            "this form is stale or was not sent from the dashboard (CSRF check failed): "
            "reload the page and try again"
        )
    if token is None:
        return False
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and hmac.compare_digest(cookie.encode(), session_value(token).encode()):
        return False
    typed = form.get("token", "")
    if typed and hmac.compare_digest(typed.encode(), token.encode()):
        return True
    raise Refused(
        "this action needs the dashboard's token (given with --token, or printed when it "
        "started): type it in the form"
        if not typed
        else "wrong token: give the one the dashboard was started with (--token)"
    )


def has_session(request: Request, token: str | None) -> bool:
    """Whether the confirmation form can leave out the token field."""
    if token is None:
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def remember_session(request: Request, response: Response, token: str) -> None:
    _set_cookie(request, response, SESSION_COOKIE, session_value(token))


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every browser; the CSRF token still is checked
        return
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        raise Refused(
            f"refused a request from another site (Origin {origin!r}, this dashboard is {own!r})"
        )
