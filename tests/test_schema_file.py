"""sql/schema.sql is the schema the migrations build (see tests/schema_file.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import dsn_of
from tests.schema_file import SCHEMA_FILE, dump

pytestmark = pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")


def test_schema_file_matches_the_migrations(postgresql, bare_postgresql):
    bare_postgresql.autocommit = True
    bare_postgresql.execute(SCHEMA_FILE.read_text())
    from_file, from_migrations = dump(dsn_of(bare_postgresql)), dump(dsn_of(postgresql))
    assert from_file == from_migrations, (
        "sql/schema.sql no longer matches sql/migrations/: run `python -m tests.schema_file`"
    )
