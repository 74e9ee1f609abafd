"""The worker's collaborators, each tested alone against a real database, without a worker
process: the maintenance runner (election, reconnection, statement errors)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from pgqueue import states
from pgqueue.maintenance import Expirer, MaintenanceRunner, Rescuer
from tests import taskapp
from tests.conftest import wait_for


def _expired_job(db: psycopg.Connection[Any]) -> str:
    r = taskapp.add.delay(1, 1)
    db.execute(
        "UPDATE pgqueue.jobs SET expires_at = now() - interval '1 second' WHERE id = %s",
        (r.id,),
    )
    return r.id


def _queued(db: psycopg.Connection[Any], job_id: str) -> bool:
    row = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    return bool(row and row[0])


def _state(db: psycopg.Connection[Any], job_id: str) -> str | None:
    row = db.execute("SELECT state FROM pgqueue.results WHERE task_id = %s", (job_id,)).fetchone()
    return row[0] if row else None


# -- maintenance --------------------------------------------------------------------------------


def test_a_maintenance_service_is_skipped_while_another_process_holds_its_lock(app, db):
    job = _expired_job(db)
    expirer = Expirer(app)
    runner = MaintenanceRunner(app.dsn, [expirer])
    # Another process doing expiry right now: it holds the service's lock.
    with psycopg.connect(db.info.dsn, autocommit=True) as other, app.connect() as conn:
        other.execute("SELECT pg_advisory_lock(%s)", (Expirer.lock_key,))
        runner.run_due(conn)
        assert _queued(db, job)
        other.execute("SELECT pg_advisory_unlock(%s)", (Expirer.lock_key,))
        expirer.next_run = 0.0
        runner.run_due(conn)
    assert not _queued(db, job)
    assert _state(db, job) == states.REVOKED


def test_each_maintenance_service_is_elected_on_its_own(app, db):
    job = _expired_job(db)
    runner = MaintenanceRunner(app.dsn, [Rescuer(app, lock_class=0x70677175), Expirer(app)])
    with psycopg.connect(db.info.dsn, autocommit=True) as other, app.connect() as conn:
        # Another process is rescuing: expiry still runs here.
        other.execute("SELECT pg_advisory_lock(%s)", (Rescuer.lock_key,))
        runner.run_due(conn)
    assert _state(db, job) == states.REVOKED


def test_the_maintenance_runner_reconnects_after_its_connection_is_ended(app, db, caplog):
    caplog.set_level(logging.INFO, logger="pgqueue.maintenance")
    expirer = Expirer(app)
    expirer.interval = 0.2
    name = "pgqueue maintenance parts-test"
    runner = MaintenanceRunner(app.dsn, [expirer], application_name=name)

    def sessions() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        return row[0] if row else 0

    runner.start()
    try:
        first = _expired_job(db)
        wait_for(lambda: not _queued(db, first), timeout=10, what="the first expiry")
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
        second = _expired_job(db)
        wait_for(lambda: not _queued(db, second), timeout=20, what="expiry after the drop")
    finally:
        runner.stop()
    assert _state(db, second) == states.REVOKED
    text = caplog.text
    assert text.count("maintenance cannot reach Postgres") == 1, text
    assert "maintenance reconnected to Postgres" in text
    wait_for(lambda: sessions() == 0, timeout=10, what="the runner's session to end on stop")


def test_the_maintenance_runner_logs_a_refused_statement_and_carries_on(app, db, caplog):
    caplog.set_level(logging.INFO, logger="pgqueue.maintenance")
    db.execute(f"ALTER DATABASE {db.info.dbname} SET lock_timeout = '100ms'")
    job = _expired_job(db)
    expirer = Expirer(app)
    expirer.interval = 0.2
    runner = MaintenanceRunner(app.dsn, [expirer])
    locker = psycopg.connect(db.info.dsn)
    try:
        locker.execute("LOCK TABLE pgqueue.jobs IN SHARE MODE")  # reads go on
        runner.start()
        wait_for(
            lambda: caplog.text.count("maintenance failed") >= 2,
            timeout=20,
            what="two passes refused by the lock",
        )
        assert _queued(db, job)
        locker.rollback()
        wait_for(lambda: not _queued(db, job), timeout=20, what="expiry once the lock is gone")
    finally:
        runner.stop()
        locker.close()
    assert "LockNotAvailable" in caplog.text
    assert "cannot reach Postgres" not in caplog.text
    assert _state(db, job) == states.REVOKED


@pytest.mark.parametrize("held", [False, True], ids=["free", "held-elsewhere"])
def test_vacuum_is_elected_with_a_session_lock_it_releases(app, db, held):
    from pgqueue.maintenance import Vacuumer

    vacuumer = Vacuumer()
    runner = MaintenanceRunner(app.dsn, [vacuumer])
    with psycopg.connect(db.info.dsn, autocommit=True) as other, app.connect() as conn:
        if held:
            other.execute("SELECT pg_advisory_lock(%s)", (Vacuumer.lock_key,))
        runner.run_due(conn)
        # Whether it ran or not, this session holds no maintenance lock afterwards.
        (locks,) = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
    assert locks == 0
    # Asked once whether the server needs vacuuming: only when it won the lock.
    assert (vacuumer._needed is None) is held
