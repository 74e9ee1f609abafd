"""Rolling upgrades: a migration may declare that an older pgqueue keeps working on the schema
it leaves (``-- compatible_from: N``, migration 0010), and then the older pgqueue's
producers, workers and commands run on it instead of refusing a newer schema.

"The older pgqueue" here is this checkout, and "the newer one" this checkout's migrations
plus one more file written by the test: an additive change of the kind such a promise is for.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue import migrate
from pgqueue.cli import main as cli_main
from pgqueue.exceptions import SchemaTooNewError
from tests.conftest import dsn_of

ADDITIVE = """\
-- a newer pgqueue: jobs get a column this pgqueue never reads or writes
{header}
ALTER TABLE pgqueue.jobs ADD COLUMN label_{version} text;
"""


def _newer(tmp_path: Path, version: int, header: str) -> migrate.Migration:
    path = tmp_path / f"{version:04d}_from_a_newer_pgqueue.sql"
    path.write_text(ADDITIVE.format(header=header, version=version))
    found = migrate.read_migration(path)
    assert found is not None
    return found


def _migrate_as_newer_pgqueue(dsn: str, *extra: migrate.Migration) -> list[migrate.Migration]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return migrate.migrate(conn, migrate.available() + list(extra))


def test_the_shipped_migrations_declare_what_they_keep_working():
    shipped = {m.version: m for m in migrate.available()}
    # 0010 added the declaration; every file before it broke the pgqueue before it
    assert shipped[10].compatible_from == 9
    assert all(m.compatible_from is None for v, m in shipped.items() if v < 10)


@pytest.mark.parametrize(
    "header",
    ["-- compatible_from: 10", "-- compatible_from: 3\n-- compatible_from: 4"],
    ids=["not-older", "twice"],
)
def test_a_malformed_declaration_is_refused_when_read(tmp_path, header):
    path = tmp_path / "0010_bad.sql"
    path.write_text(f"{header}\nSELECT 1;\n")
    with pytest.raises(ValueError, match=r"0010_bad\.sql: at most one '-- compatible_from: N'"):
        migrate.read_migration(path)


def test_an_older_pgqueue_runs_on_a_newer_schema_that_declares_it_compatible(
    app, db, dsn, tmp_path, worker
):
    known = migrate.latest_version()
    newer = _newer(tmp_path, known + 1, f"-- compatible_from: {known}")
    assert [m.version for m in _migrate_as_newer_pgqueue(dsn, newer)] == [known + 1]
    row = db.execute(
        "SELECT compatible_from FROM pgqueue.schema_migrations WHERE version = %s", (known + 1,)
    ).fetchone()
    assert row == (known,)

    # producers, on connections they open themselves, blocking and async
    result = app.send_task("tests.taskapp.add", (2, 3))
    from tests import taskapp

    async def enqueue_async() -> str:
        try:
            return (await taskapp.add.adelay(4, 5)).id
        finally:
            await app.aclose()

    async_id = asyncio.run(enqueue_async())
    # a worker of this (older) pgqueue claims and runs them on the newer schema
    worker("-c", "1")
    assert result.get(timeout=60) == 5
    assert app.AsyncResult(async_id).get(timeout=60) == 9
    # and the operator's commands read it
    status = CliRunner().invoke(cli_main, ["--dsn", dsn, "status"])
    assert status.exit_code == 0, status.output
    # but migrating stays the newest pgqueue's job: this one refuses, changing nothing
    refused = CliRunner().invoke(cli_main, ["--dsn", dsn, "migrate"])
    assert refused.exit_code == 1
    assert "migrates only with the newest pgqueue" in refused.output
    versions = [r[0] for r in db.execute("SELECT version FROM pgqueue.schema_migrations")]
    assert versions[-1] == known + 1


def test_a_newer_migration_without_the_promise_is_still_refused(app, db, dsn, tmp_path):
    known = migrate.latest_version()
    compatible = _newer(tmp_path, known + 1, f"-- compatible_from: {known}")
    breaking = _newer(tmp_path, known + 2, "-- (no promise: older pgqueue must not run)")
    assert breaking.compatible_from is None
    _migrate_as_newer_pgqueue(dsn, compatible, breaking)
    message = rf"it has migration {known + 2:04d}.*migration {known + 2:04d} does not keep it"
    with pytest.raises(SchemaTooNewError, match=message):
        app.send_task("tests.taskapp.add", (1, 1))
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_a_promise_for_a_later_pgqueue_does_not_cover_this_one(app, db, dsn, tmp_path):
    known = migrate.latest_version()
    # the newer pgqueue's file keeps the one before it working, not this one
    later_only = _newer(tmp_path, known + 2, f"-- compatible_from: {known + 1}")
    previous = _newer(tmp_path, known + 1, f"-- compatible_from: {known}")
    _migrate_as_newer_pgqueue(dsn, previous, later_only)
    with pytest.raises(SchemaTooNewError, match=rf"migration {known + 2:04d} does not keep"):
        app.send_task("tests.taskapp.add", (1, 1))


def _versions(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT version FROM pgqueue.schema_migrations")]


def test_migrating_a_schema_from_before_0010_records_each_declaration(bare_postgresql):
    # a database at 0009, as the pgqueue before this one left it, then migrated by this one
    dsn = dsn_of(bare_postgresql)
    old = [m for m in migrate.available() if m.version <= 9]
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate.migrate(conn, old)
        # this pgqueue reads that schema's versions although the column is not there yet
        assert set(migrate.applied(conn)) == {m.version for m in old}
        assert migrate.migrate(conn)[0].version == 10
        assert _versions(conn) == [m.version for m in migrate.available()]
        assert migrate.applied(conn)[10] == 9
