"""A worker rides out a real restart of its Postgres server.

The server is a private one made for this test with initdb (skipped where the PostgreSQL
server binaries are not installed), so restarting it disturbs nobody else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import states
from tests import taskapp
from tests.conftest import WorkerProcess, wait_for


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root, self.port = bindir, root, _free_port()
        self.data = root / "data"
        # initdb refuses to run as root; use the postgres account there.
        self.prefix = ["su", "postgres", "-c"] if os.geteuid() == 0 else None
        if self.prefix:
            shutil.chown(root, "postgres")

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.prefix:
            command = [*self.prefix, " ".join(f"'{a}'" for a in command)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def pg_ctl(self, action: str) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-w",
            "-m",
            "fast",
            "-l",
            str(self.root / "log"),
            "-o",
            f"-p {self.port} -k {self.root}",
            action,
        )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Not under pytest's tmp_path: its parents are private to us, and the server may run
    # as another account.
    root = Path(tempfile.mkdtemp(prefix="pgqueue-restart-"))
    root.chmod(0o755)
    server = PrivateServer(bindir, root)
    try:
        server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres")
        server.pg_ctl("start")
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.pg_ctl("stop")
        shutil.rmtree(root, ignore_errors=True)


def test_worker_survives_a_server_restart_and_writes_its_result_once(private_server, monkeypatch):
    dsn = private_server.dsn
    monkeypatch.setenv("PGQUEUE_DSN", dsn)
    taskapp.app.close()
    taskapp.app.migrate()
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE test_runs (tag text, pid int, at timestamptz)")
        w = WorkerProcess(dsn, ["-c", "1"], db)
        w.wait_ready()
        r = taskapp.sleep.delay(3)
        wait_for(lambda: r.state == states.STARTED, what="STARTED")
        taskapp.app.close()
    try:
        private_server.pg_ctl("restart")
        assert r.get(timeout=60) == 3
        assert taskapp.add.delay(2, 2).get(timeout=30) == 4
        log = w.output()
        assert log.count("database connection lost") == 1, log
        assert "database connection restored" in log
        with psycopg.connect(dsn) as db:
            count = db.execute("SELECT count(*) FROM pgqueue.results").fetchone()[0]
        assert count == 2
    finally:
        w.close()
        taskapp.app.close()
