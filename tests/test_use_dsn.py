"""PgQueue.use_dsn: pointing an app at another database after it was made (pgqueue --dsn)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pgqueue.app
import pgqueue.current
from pgqueue import PgQueue
from tests.conftest import dsn_of


@pytest.fixture(autouse=True)
def keep_default_app() -> Iterator[None]:
    before = pgqueue.current._default_app
    yield
    pgqueue.current._default_app = before


def test_use_dsn_sends_later_jobs_to_the_new_database(dsn, db, bare_postgresql):
    app = PgQueue("moved", dsn=dsn_of(bare_postgresql))
    first = app.connection()
    assert first.info.dbname == bare_postgresql.info.dbname

    app.use_dsn(dsn)

    assert app.dsn == dsn
    assert first.closed  # this thread's connection to the old database is not kept
    sent = app.send_task("t.moved")
    row = db.execute("SELECT task_name FROM pgqueue.jobs WHERE id = %s", (sent.id,)).fetchone()
    assert row == ("t.moved",)
    assert app.connection().info.dbname == db.info.dbname
    app.close()
