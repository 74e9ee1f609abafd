"""Serving the dashboard on its own (``pgqueue dashboard``): uvicorn, one process."""

from __future__ import annotations

import ipaddress

import uvicorn
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalHostsOnly:
    """Answers only requests addressed to this machine by a local name (``Host:
    localhost``, ``127.0.0.1``, ``[::1]``, with any port). A page elsewhere that points a
    name of its own at 127.0.0.1 (DNS rebinding) could otherwise read the dashboard as if it
    were on the same site."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _host_name(scope) not in LOCAL_NAMES:
            refused = PlainTextResponse(
                "this dashboard answers only to localhost, 127.0.0.1 and [::1]", status_code=421
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _host_name(scope: Scope) -> str:
    host = ""
    for key, value in scope.get("headers", ()):
        if key == b"host":
            host = value.decode("latin-1").lower()
    if host.startswith("["):  # [::1]:8080
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def serve(dashboard: ASGIApp, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve ``dashboard`` until interrupted; on a loopback address, to local names only."""
    app = LocalHostsOnly(dashboard) if is_loopback(host) else dashboard
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
