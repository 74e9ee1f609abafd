"""A Postgres server pgqueue found to create databases on (db.find_server), by kind: a local
one, or the embedded one (embedded.py). A module of its own so that db.py and embedded.py,
which both describe servers, need not import each other both ways."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Server:
    """A Postgres server that :func:`find_server` found, and the role pgqueue uses on it."""

    host: str  # a host name or address, or a Unix socket directory
    port: int
    user: str
    kind: str  # "local" or "embedded"
    password: str | None = None
    started: bool = False  # an embedded server that this call started
    data_dir: str | None = None  # the embedded server's

    def dsn(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URI for ``database`` on this server."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        name = quote(database, safe="")
        if self.host.startswith("/"):
            port = "" if self.port == 5432 else f"&port={self.port}"
            return f"postgresql://{auth}@/{name}?host={quote(self.host, safe='/')}{port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{auth}@{host}:{self.port}/{name}"
