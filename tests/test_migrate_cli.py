"""Schema migrations and the command line."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from typing import Any

import psycopg
from click.testing import CliRunner

from pgqueue import locks, migrate
from pgqueue.cli import main
from pgqueue.locks import MIGRATION_LOCK
from pgqueue.version import __version__
from tests.conftest import ROOT, dsn_of, wait_for


def test_migrate_twice_and_concurrently_applies_each_file_once(bare_postgresql):
    dsn = dsn_of(bare_postgresql)
    with psycopg.connect(dsn, autocommit=True) as holder:
        # Hold the migration lock until both processes wait on it, so that they really
        # migrate at the same time instead of one after the other.
        with holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "pgqueue.cli", "--dsn", dsn, "migrate"],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            try:
                wait_for(
                    lambda: _waiting_on_migration_lock(holder) == 2,
                    timeout=60,
                    what="both migrate processes to wait on the migration lock",
                )
            except BaseException:
                for proc in procs:
                    proc.kill()
                raise
        outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    applied = [out for out, _ in outputs if "applied 0001_initial" in out]
    assert len(applied) == 1, outputs  # one process applied every file, the other none
    assert all(f"applied {m.version:04d}_{m.name}" in applied[0] for m in migrate.available())
    assert sum("schema is up to date" in out for out, _ in outputs) == 1, outputs
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrate.migrate(conn) == []
        versions = [r[0] for r in conn.execute("SELECT version FROM pgqueue.schema_migrations")]
        assert versions == [m.version for m in migrate.available()]
        migrate.check(conn)


def _waiting_on_migration_lock(conn: psycopg.Connection) -> int:
    """Sessions of this database waiting for the migration's advisory lock."""
    (waiting,) = conn.execute(
        "SELECT count(*) FROM pg_locks"
        " WHERE locktype = 'advisory' AND NOT granted"
        "   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        "   AND classid = %s AND objid = %s",
        (MIGRATION_LOCK >> 32, MIGRATION_LOCK & 0xFFFFFFFF),
    ).fetchone()
    return int(waiting)


def test_a_migrate_kept_waiting_says_who_holds_the_lock(bare_postgresql, monkeypatch, caplog):
    dsn = dsn_of(bare_postgresql)
    monkeypatch.setattr(locks, "LOCK_NOTICE_SECONDS", 0.3)
    applied: list[Any] = []
    with psycopg.connect(dsn, autocommit=True, application_name="forgotten session") as holder:
        (holder_pid,) = holder.execute("SELECT pg_backend_pid()").fetchone()
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))  # a session lock

        def run() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                applied.extend(migrate.migrate(conn))

        thread = threading.Thread(target=run)
        with caplog.at_level(logging.WARNING, logger="pgqueue.migrate"):
            thread.start()
            said = wait_for(
                lambda: [r.getMessage() for r in caplog.records if "migration lock" in r.message],
                timeout=30,
                what="migrate to say who holds the lock",
            )
            assert f"held by server process {holder_pid}" in said[0]
            assert "'forgotten session'" in said[0]
            assert f"pg_terminate_backend({holder_pid})" in said[0]
            assert not applied  # still waiting, nothing applied
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            thread.join(60)
    assert not thread.is_alive()
    assert [m.version for m in applied] == [m.version for m in migrate.available()]
    with psycopg.connect(dsn, autocommit=True) as conn:
        # the wait's lock_timeout was the lock's only: the migration ran without it
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
