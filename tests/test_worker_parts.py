"""The worker's collaborators, each tested alone against a real database, without a worker
process: the maintenance runner (election, reconnection, statement errors), the claim round
trip and the outcome writer's fence, and the retry policy of pool failures."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any

import psycopg
import pytest

from pgqueue import PgQueue, states
from pgqueue.claims import Claims
from pgqueue.exceptions import TimeLimitExceeded, WorkerLostError
from pgqueue.execution import Job, Outcome
from pgqueue.handoff import HandoffSlots
from pgqueue.lease import Registration
from pgqueue.maintenance import Expirer, MaintenanceRunner, Rescuer
from pgqueue.outcomes import OutcomeWriter
from pgqueue.policy import JobPolicy
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


def _hold_row(conn: psycopg.Connection[Any], service: str) -> None:
    """Another process's pass of ``service`` under way: its transaction holds the row."""
    conn.execute("SELECT 1 FROM pgqueue.maintenance WHERE service = %s FOR UPDATE", (service,))


def test_a_maintenance_service_is_skipped_while_another_process_holds_its_row(app, db):
    job = _expired_job(db)
    expirer = Expirer(app)
    runner = MaintenanceRunner(app.dsn, [expirer])
    with psycopg.connect(db.info.dsn) as other, app.connect() as conn:
        _hold_row(other, "expire")
        runner.run_due(conn)
        assert _queued(db, job)
        other.rollback()
        expirer.next_run = 0.0
        runner.run_due(conn)
    assert not _queued(db, job)
    assert _state(db, job) == states.REVOKED


def test_each_maintenance_service_is_elected_on_its_own(app, db):
    job = _expired_job(db)
    runner = MaintenanceRunner(app.dsn, [Rescuer(app), Expirer(app)])
    with psycopg.connect(db.info.dsn) as other, app.connect() as conn:
        # Another process is rescuing: expiry still runs here.
        _hold_row(other, "rescue")
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
        # operators see it too: why the last pass failed, and when
        (error,) = db.execute(
            "SELECT last_error FROM pgqueue.maintenance"
            " WHERE service = 'expire' AND last_error_at IS NOT NULL"
        ).fetchone()
        assert "LockNotAvailable" in error
        locker.rollback()
        wait_for(lambda: not _queued(db, job), timeout=20, what="expiry once the lock is gone")
    finally:
        runner.stop()
        locker.close()
    assert "LockNotAvailable" in caplog.text
    # a pass that succeeds clears it
    assert db.execute(
        "SELECT last_error, last_finished_at IS NOT NULL FROM pgqueue.maintenance"
        " WHERE service = 'expire'"
    ).fetchone() == (None, True)
    assert "cannot reach Postgres" not in caplog.text
    assert _state(db, job) == states.REVOKED


def test_a_stalled_maintenance_pass_holds_up_no_claim(app, db, worker, monkeypatch):
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_rescue_interval": 0.2}))
    worker("-c", "2", "-P", "threads")
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2  # past start-up
    with psycopg.connect(db.info.dsn) as locker:
        # The rescue deletes lost workers' rows: it waits on this lock for as long as it is
        # held. Claims, hand-offs and outcome writes never touch the table.
        locker.execute("LOCK TABLE pgqueue.workers IN ACCESS EXCLUSIVE MODE")
        wait_for(
            lambda: db.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'pgqueue maintenance' AND wait_event_type = 'Lock'"
            ).fetchone()[0],
            timeout=20,
            what="a maintenance pass to wait on the lock",
        )
        results = [taskapp.add.delay(i, i) for i in range(10)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
        locker.rollback()


@pytest.mark.parametrize("held", [False, True], ids=["free", "running-elsewhere"])
def test_vacuum_is_elected_outside_a_transaction_and_marks_its_row_while_it_runs(app, db, held):
    from pgqueue.maintenance import Vacuumer

    vacuumer = Vacuumer()
    runner = MaintenanceRunner(app.dsn, [vacuumer])
    with psycopg.connect(db.info.dsn, autocommit=True) as other, app.connect() as conn:
        if held:
            # another process's VACUUM under way: its row names that live server process
            other.execute(
                "UPDATE pgqueue.maintenance SET running_pid = pg_backend_pid()"
                " WHERE service = 'vacuum'"
            )
        runner.run_due(conn)
        # Whether it ran or not, this session holds no lock afterwards.
        (locks,) = conn.execute(
            "SELECT count(*) FROM pg_locks"
            " WHERE pid = pg_backend_pid() AND locktype IN ('advisory', 'tuple', 'transactionid')"
        ).fetchone()
    assert locks == 0
    # Asked once whether the server needs vacuuming: only when it won the pass.
    assert (vacuumer._needed is None) is held
    running, finished = db.execute(
        "SELECT running_pid, last_finished_at FROM pgqueue.maintenance WHERE service = 'vacuum'"
    ).fetchone()
    assert (finished is None) is held
    if not held:
        assert running is None


def test_a_vacuum_whose_process_is_gone_holds_up_no_other(app, db):
    from pgqueue.maintenance import Vacuumer

    with psycopg.connect(db.info.dsn, autocommit=True) as gone:
        (pid,) = gone.execute("SELECT pg_backend_pid()").fetchone()
    db.execute("UPDATE pgqueue.maintenance SET running_pid = %s WHERE service = 'vacuum'", (pid,))
    wait_for(
        lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone(),
        what="the session to end",
    )
    vacuumer = Vacuumer()
    with app.connect() as conn:
        MaintenanceRunner(app.dsn, [vacuumer]).run_due(conn)
    assert vacuumer._needed is not None


# -- claims and outcomes ---------------------------------------------------------------------


def _register(db: psycopg.Connection[Any], name: str) -> str:
    worker_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO pgqueue.workers (id, name, hostname, pid, queues, tasks, pool, concurrency)"
        " VALUES (%s, %s, 'h', 1, '{default}', %s, 'solo', 1)",
        (worker_id, name, [taskapp.add.name]),
    )
    return worker_id


def _claim_one(app: PgQueue, conn: Any, worker_id: str, writer: OutcomeWriter) -> Job:
    me = Registration(
        id=worker_id,
        name="w",
        hostname="h",
        queues=["default"],
        tasks=[taskapp.add.name],
        at_most_once=[],
        pool="solo",
        concurrency=1,
        reconnect_grace=10.0,
        synchronous_commit="on",
    )
    claims = Claims(
        me,
        capacity=1,
        poll_interval=5.0,
        policy=JobPolicy(app),
        failed=writer.add,
    )
    trip = claims.send(conn, [], 1, 1, HandoffSlots(worker_id, 1, "on"))
    (job,) = claims.received(conn, trip)
    assert job.started and not claims.buffer
    return job


def test_the_outcome_writer_writes_only_outcomes_of_jobs_still_its_own(app, db, caplog):
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    r = taskapp.add.delay(2, 3)
    a, b = _register(db, "a"), _register(db, "b")
    with app.connect() as conn:
        mine = OutcomeWriter(app, a, "a")
        job = _claim_one(app, conn, a, mine)
        assert job.id == r.id
        # Another worker's writer, and a stale attempt of ours: the fence refuses both.
        theirs = OutcomeWriter(app, b, "b")
        theirs.add(Outcome.for_job(job, states.SUCCESS, result_json="5"))
        theirs.write(conn)
        stale = Outcome.for_job(job, states.SUCCESS, result_json="5")
        stale.attempt = job.attempt - 1
        mine.add(stale)
        mine.write(conn)
        assert caplog.text.count("discarded: the job is no longer ours") == 2
        assert r.state == states.STARTED
        mine.add(Outcome.for_job(job, states.SUCCESS, result_json="5"))
        mine.write(conn)
    assert not mine.held and mine.jobs_done == 2 and theirs.jobs_done == 1
    assert r.get(timeout=5) == 5
    assert caplog.text.count("discarded") == 2


def test_held_outcomes_stay_held_when_the_server_refuses_them(app, db):
    r = taskapp.add.delay(1, 1)
    a = _register(db, "a")
    with app.connect() as conn:
        writer = OutcomeWriter(app, a, "a")
        job = _claim_one(app, conn, a, writer)
        writer.add(Outcome.for_job(job, states.SUCCESS, result_json="2"))
        conn.execute("SET lock_timeout = '100ms'")
        with psycopg.connect(db.info.dsn) as locker:
            locker.execute("LOCK TABLE pgqueue.jobs IN SHARE MODE")
            sent = None
            with pytest.raises(psycopg.errors.LockNotAvailable), conn.pipeline():
                sent = writer.send(conn)
            writer.settle(sent, failed=True)
            assert len(writer.held) == 1 and writer.jobs_done == 0
        writer.write(conn)
    assert not writer.held
    assert r.get(timeout=5) == 2


# -- the retry policy of pool failures ----------------------------------------------------------


def _job(task_name: str, retries: int, options: dict[str, Any] | None = None) -> Job:
    now = dt.datetime.now(dt.timezone.utc)
    return Job(
        str(uuid.uuid4()), 1, task_name, "default", [], {}, 0, now, None, False,
        retries, None, None, None, options or {}, retries + 1,
    )  # fmt: skip


def test_a_pool_failure_gets_the_tasks_retry_policy():
    app = PgQueue("policy", dsn="postgresql:///unused")

    @app.task(autoretry_for=(TimeLimitExceeded,), retry_kwargs={"max_retries": 1, "countdown": 3})
    def limited() -> None: ...

    @app.task(acks_late=True, reject_on_worker_lost=True, max_retries=None)
    def rerun() -> None: ...

    @app.task(acks_late=False, reject_on_worker_lost=True)
    def once() -> None: ...

    policy = JobPolicy(app)
    assert policy.retry_after_pool_failure(_job(limited.name, 0), TimeLimitExceeded) == 3.0
    # retry_kwargs' limit reached: it stays a failure
    assert policy.retry_after_pool_failure(_job(limited.name, 1), TimeLimitExceeded) is None
    assert policy.retry_after_pool_failure(_job(limited.name, 0), WorkerLostError) is None
    assert policy.retry_after_pool_failure(_job(rerun.name, 7), WorkerLostError) == 0.0
    # at-most-once: a lost child is not run again, whatever reject_on_worker_lost says
    assert policy.retry_after_pool_failure(_job(once.name, 0), WorkerLostError) is None
    assert policy.retry_after_pool_failure(_job("unknown", 0), TimeLimitExceeded) is None
