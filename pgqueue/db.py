"""Connections to Postgres, and turning driver errors into messages that say what to do."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .exceptions import ConfigurationError, DatabaseUnavailable, SchemaMissingError

JOBS_CHANNEL = "pgqueue_jobs"
RESULTS_CHANNEL = "pgqueue_results"

# Without these a call during an outage could hang on a dead TCP peer for many minutes.
_CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}

_MISSING_SCHEMA = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedFunction,
)


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: the one given, else ``PGQUEUE_DSN``."""
    dsn = dsn or os.environ.get("PGQUEUE_DSN")
    if not dsn:
        raise ConfigurationError(
            "no database given: pass dsn= to PgQueue(...), use --dsn, or set PGQUEUE_DSN "
            "(e.g. PGQUEUE_DSN=postgresql://localhost/mydb)"
        )
    return dsn


def describe(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def connect(dsn: str, *, autocommit: bool = True, application_name: str = "pgqueue") -> Any:
    """Open a connection with timeouts and keepalives, or raise a clear error."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid DSN {dsn!r}: {exc}") from None
    for key, value in _CONNECT_DEFAULTS.items():
        params.setdefault(key, value)
    params.setdefault("application_name", application_name)
    try:
        return psycopg.connect(
            make_conninfo(**{k: str(v) for k, v in params.items()}), autocommit=autocommit
        )
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise DatabaseUnavailable(
            f"cannot connect to Postgres at {describe(dsn)}: {first_line}. "
            "Check that the server is running and the DSN (--dsn / PGQUEUE_DSN) is right."
        ) from None


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise a missing schema or a dropped connection as pgqueue's own clear errors."""
    try:
        yield
    except _MISSING_SCHEMA as exc:
        raise SchemaMissingError(
            f"the pgqueue schema is missing or out of date in this database ({exc.sqlstate}: "
            f"{str(exc).splitlines()[0]}): run `pgqueue migrate` (or app.migrate())"
        ) from exc
    except psycopg.OperationalError as exc:
        if isinstance(exc, DatabaseUnavailable):
            raise
        # libpq's messages span lines; outages are logged as one line each
        message = " ".join(str(exc).split())
        raise DatabaseUnavailable(f"lost the connection to Postgres: {message}") from exc


class ConnectionHolder:
    """One autocommit connection per thread and process, opened on first use.

    A connection inherited through fork() is never used or closed by the child: closing
    it would end the parent's session too.
    """

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._local = threading.local()

    @property
    def dsn(self) -> str:
        return resolve_dsn(self._dsn)

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is None or conn.closed or pid != os.getpid():
            conn = connect(self.dsn)
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def discard(self) -> None:
        """Forget a broken connection so the next call opens a fresh one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()
        self._local.conn = None

    def close(self) -> None:
        self.discard()
