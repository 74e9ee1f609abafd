"""Schema migrations and the command line."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
from click.testing import CliRunner

from pgqueue import migrate
from pgqueue.cli import main
from pgqueue.version import __version__
from tests.conftest import ROOT, dsn_of


def test_migrate_twice_and_concurrently_applies_each_file_once(bare_postgresql):
    dsn = dsn_of(bare_postgresql)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate.migrate(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrate.migrate(conn) == []
        versions = [r[0] for r in conn.execute("SELECT version FROM pgqueue.schema_migrations")]
        assert versions == [m.version for m in migrate.available()]
        migrate.check(conn)


def test_cli_migrate_then_up_to_date(bare_postgresql):
    runner = CliRunner()
    dsn = dsn_of(bare_postgresql)
    first = runner.invoke(main, ["--dsn", dsn, "migrate"])
    assert first.exit_code == 0, first.output
    assert "applied 0001_initial" in first.output
    second = runner.invoke(main, ["--dsn", dsn, "migrate"])
    assert second.exit_code == 0
    assert "up to date" in second.output


def test_cli_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_unreachable_server_is_one_clear_line_and_nonzero_exit():
    proc = run_cli("--dsn", "postgresql://postgres@127.0.0.1:1/x?connect_timeout=2", "migrate")
    assert proc.returncode == 1
    assert "cannot connect to Postgres" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_malformed_dsn_is_one_clear_line():
    proc = run_cli("--dsn", "this is not a dsn", "migrate")
    assert proc.returncode == 1
    assert "invalid DSN" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_with_unimportable_app_is_one_clear_line(dsn):
    proc = run_cli("worker", "-A", "no_such_module:app")
    assert proc.returncode == 1
    assert "cannot import 'no_such_module'" in proc.stderr
    assert "Traceback" not in proc.stderr
