"""Fixtures: a fresh database per test, created from a migrated template, and real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

from pgqueue import migrate

ROOT = Path(__file__).resolve().parent.parent


def _test_server() -> str:
    """The local server if one accepts us, else the embedded one (pgqueue[embedded]), which is
    stopped again at exit when this run started it."""
    import atexit

    from pgqueue import embedded
    from pgqueue.db import find_server

    server = find_server()
    if server.started:
        atexit.register(embedded.stop)
    return server.dsn()


# PGQUEUE_TEST_DSN names the server the tests may create databases on (default: as above).
_server = conninfo_to_dict(os.environ.get("PGQUEUE_TEST_DSN") or _test_server())


def _load_schema(**kwargs: Any) -> None:
    with psycopg.connect(**{**kwargs, "autocommit": True}) as conn:
        migrate.migrate(conn)
        conn.execute(
            "CREATE TABLE public.test_runs"
            " (tag text, pid int, at timestamptz DEFAULT clock_timestamp())"
        )


_server_args = dict(
    host=str(_server.get("host", "127.0.0.1")),
    port=int(_server.get("port", 5432)),
    user=str(_server.get("user", "postgres")),
    password=str(_server.get("password", "")) or None,
)

# Per-run names, so that two test runs on one server never share a template database.
_run = os.getpid()
pg_migrated = factories.postgresql_noproc(
    **_server_args, dbname=f"pgqueue_test_{_run}", load=[_load_schema]
)
postgresql = factories.postgresql("pg_migrated")
pg_bare = factories.postgresql_noproc(**_server_args, dbname=f"pgqueue_test_bare_{_run}")
bare_postgresql = factories.postgresql("pg_bare")


def dsn_of(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    params = {"host": info.host, "port": str(info.port), "user": info.user, "dbname": info.dbname}
    if info.password:
        params["password"] = info.password
    return make_conninfo(**params)


@pytest.fixture
def dsn(postgresql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """DSN of this test's migrated database, also exported as PGQUEUE_DSN."""
    value = dsn_of(postgresql)
    monkeypatch.setenv("PGQUEUE_DSN", value)
    postgresql.autocommit = True
    return value


@pytest.fixture
def app(dsn: str) -> Iterator[Any]:
    from tests.taskapp import app

    app.close()
    yield app
    app.close()


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A separate autocommit connection to the test database, for checking rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CliProcess:
    """A real ``pgqueue ...`` process against the test database, logging to a file."""

    kind = "cli"

    def __init__(self, dsn: str, db: psycopg.Connection[Any], args: list[str]) -> None:
        self.dsn = dsn
        self.db = db
        env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        self.log_path = tmp / f"pgqueue-{self.kind}-{id(self)}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.command([sys.executable, "-m", "pgqueue.cli", *args]),
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def command(self, argv: list[str]) -> list[str]:
        """What runs ``argv``: itself here; a subclass may wrap it (tests/test_hosts.py)."""
        return argv

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited early:\n{self.output()}")
            return check()

        wait_for(ready, timeout, what)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.kind} did not stop in {timeout}s:\n{self.output()}"
            ) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


class WorkerProcess(CliProcess):
    """A real ``pgqueue worker -A tests.taskapp:app`` process (or of another ``app``,
    importable from the checkout's top)."""

    kind = "worker"

    def __init__(
        self,
        dsn: str,
        args: list[str],
        db: psycopg.Connection[Any],
        app: str = "tests.taskapp:app",
    ) -> None:
        super().__init__(dsn, db, ["worker", "-A", app, "--loglevel", "DEBUG", *args])

    def wait_ready(self, timeout: float = 30) -> WorkerProcess:
        def registered() -> bool:
            row = self.db.execute(
                "SELECT 1 FROM pgqueue.workers WHERE pid = %s", (self.pid,)
            ).fetchone()
            return row is not None

        self._wait_until(registered, timeout, "worker to register")
        return self


@pytest.fixture
def worker(dsn: str, db: psycopg.Connection[Any]) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers: ``worker("-c", "2")``; all are stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(*args: str, ready: bool = True) -> WorkerProcess:
        w = WorkerProcess(dsn, list(args), db)
        started.append(w)
        return w.wait_ready() if ready else w

    yield start
    for w in started:
        w.close()
