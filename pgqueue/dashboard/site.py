"""What every route of the dashboard shares: its settings, its connections, and how a page
is rendered (Jinja2, autoescaped: every value from the database is text, never markup)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..app import PgQueue
from ..db import describe
from ..exceptions import ConfigurationError
from ..sensitive import Sensitive
from . import security
from .connections import Connections

HERE = Path(__file__).resolve().parent
NOTICE_COOKIE = "pgqueue_notice"

# Pages say what they are, not more: no framing, no scripts or styles but the dashboard's.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass
class Site:
    """The dashboard's settings and shared parts, one per ``create_app``."""

    app: PgQueue
    allow_actions: bool = False
    token: str | None = None
    sensitive: Sensitive = field(default_factory=Sensitive)
    refresh: float = 2.0
    connections: Connections = field(init=False)
    templates: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.connections = Connections(self.app)
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            ago=ago, when=when, seconds=seconds, pretty=pretty, urlencode_pairs=urlencode
        )

    def sensitive_for(self) -> Sensitive:
        """The configured patterns plus the app's tasks marked ``sensitive=True``."""
        return Sensitive.of(self.app, self.sensitive.patterns)

    @property
    def database(self) -> str:
        """Where the dashboard reads from, without a password."""
        try:
            return describe(self.app.dsn)
        except ConfigurationError:
            return "no database given"

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        base = request.scope.get("root_path") or ""
        notice = request.cookies.get(NOTICE_COOKIE)
        notice = unquote(notice) if notice else None
        page = self.templates.get_template(template).render(
            base=base,
            site=self,
            request=request,
            csrf=security.csrf_token(request),
            notice=notice,
            refresh_ms=int(self.refresh * 1000),
            **context,
        )
        response = HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)
        security.remember_csrf(request, response)
        if notice is not None and not request.query_params.get("fragment"):
            response.delete_cookie(NOTICE_COOKIE, path=base + "/")
        return response


# -- how values are written ----------------------------------------------------------------


def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``12s ago`` / ``in 3m`` for a time, ``-`` for none."""
    if value is None:
        return "-"
    now = now or dt.datetime.now(dt.timezone.utc)
    delta = (now - value).total_seconds()
    text = seconds(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def seconds(value: float | None) -> str:
    """A duration as people read it: ``0.25s``, ``42s``, ``3m 20s``, ``2h 5m``, ``3d 4h``."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}s" if value < 1 else f"{value:.1f}s"
    total = int(value)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if total >= size:
            return f"{total // size}{unit} {(total % size) // sub_size}{sub}"
    if total >= 60:
        return f"{total // 60}m {total % 60}s"
    return f"{total}s"


def when(value: dt.datetime | None) -> str:
    """A time in UTC to the second, ``-`` for none."""
    if value is None:
        return "-"
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def pretty(value: Any) -> str:
    """A JSON value indented for reading."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
