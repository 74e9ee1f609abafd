"""Serving the dashboard on its own (``pgqueue dashboard``): uvicorn, one process."""

from __future__ import annotations

import ipaddress

import uvicorn
from starlette.applications import Starlette


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(dashboard: Starlette, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve ``dashboard`` until interrupted."""
    uvicorn.run(dashboard, host=host, port=port, log_level="info", server_header=False)
