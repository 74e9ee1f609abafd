"""No advisory lock another role could hold stalls pgqueue (migration 0013). Any role that
can connect may take any advisory key and keep it: a producer (or a role with no grant at
all) holding the keys pgqueue took before 0013 neither stalls the claims of a limited task,
nor keeps a dead worker "alive", nor keeps a worker from registering, nor keeps the shared
stats sample stale; and what replaced those keys (row locks, the worker's own backend) is
out of its reach."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import psycopg
import psycopg.errors
import pytest

from pgqueue import queries
from pgqueue.locks import WORKER_LOCK_CLASS
from tests import taskapp
from tests.conftest import wait_for
from tests.test_controls_limits import max_overlap, runs
from tests.test_roles import Logins, as_user
from tests.test_roles import logins as logins  # the fixture
from tests.test_roles import with_outsider as with_outsider  # the fixture

# The advisory keys of before 0013: the claims of a limited task or queue (class, then
# hashtext of the cell), and the refresh of the shared stats sample.
LIMIT_CLASS = 0x70677176
SAMPLE_KEY = 0x70677175_0004

# Every way to lock or change a row of these tables.
ROW_LOCKS = (
    "SELECT 1 FROM {table} FOR UPDATE",
    "SELECT 1 FROM {table} FOR NO KEY UPDATE",
    "SELECT 1 FROM {table} FOR SHARE",
    "SELECT 1 FROM {table} FOR KEY SHARE",
    "UPDATE {table} SET {column} = {column}",
    "DELETE FROM {table}",
    "LOCK TABLE {table} IN ROW EXCLUSIVE MODE",
)


def connect(logins: Logins, kind: str) -> psycopg.Connection[Any]:
    return psycopg.connect(as_user(logins.dsn, logins.names[kind]), autocommit=True)


def cannot_lock_rows(conn: psycopg.Connection[Any], table: str, column: str) -> None:
    """Every way to lock or change a row of ``table`` is refused to ``conn``'s role."""
    for statement in ROW_LOCKS:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(statement.format(table=table, column=column))


def key_holder(db: psycopg.Connection[Any], classid: int, objid: int) -> int | None:
    """The server process holding a two-key advisory lock, if any."""
    row = db.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 2",
        (classid, objid),
    ).fetchone()
    return None if row is None else int(row[0])


def runs_of(db: psycopg.Connection[Any], tag: str) -> int:
    return int(db.execute("SELECT count(*) FROM test_runs WHERE tag = %s", (tag,)).fetchone()[0])


# -- limited claims ---------------------------------------------------------------------------


def test_a_held_limit_key_stalls_no_claim_and_no_other_role_can_lock_a_limit(
    logins, with_outsider, db, app
):
    task = "tests.taskapp.two_at_a_time"
    # A limit row exists once a claim was made under it; the outsider, the producer and the
    # operator can lock none of them (the operator reads them).
    db.execute("INSERT INTO pgqueue.rate_limits VALUES ('task:' || %s, '-infinity')", (task,))
    with connect(logins, "producer") as producer, connect(logins, "outsider") as outsider:
        for conn in (producer, outsider):
            cannot_lock_rows(conn, "pgqueue.rate_limits", "next_at")
            # claim_limited runs with the caller's rights: refused before it locks anything
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(
                    "SELECT * FROM pgqueue.claim_limited(gen_random_uuid(), '{default}',"
                    " %s, %s, 1, '{}', 'on')",
                    ([task], json.dumps([{"task": task, "concurrency": 2}])),
                )
        with logins.connect("operator") as operator:
            assert operator.execute("SELECT name FROM pgqueue.rate_limits").fetchall() == [
                (f"task:{task}",)
            ]
            cannot_lock_rows(operator, "pgqueue.rate_limits", "next_at")
        # The producer holds the key that serialized this task's claims, and keeps it, as a
        # stuck client would.
        producer.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LIMIT_CLASS, f"task:{task}"))
        for _ in range(2):
            logins.worker(db, "-c", "2", "-P", "threads")
        jobs = [taskapp.two_at_a_time.delay(0.2) for _ in range(6)]
        for r in jobs:
            assert r.get(timeout=60) == 0.2
        # the key is still held: the claims did not need it
        (h,) = db.execute("SELECT hashtext(%s)", (f"task:{task}",)).fetchone()
        assert key_holder(db, LIMIT_CLASS, h & 0xFFFFFFFF) == producer.info.backend_pid
    # and the limit held: never more than two at a time, from the jobs' start and end times
    assert max_overlap([(s, e) for s, e, _ in runs(db, task)]) == 2
    for w in logins.workers:
        assert "permission denied" not in w.output()


# -- worker liveness ----------------------------------------------------------------------------


def lock_key_of(db: psycopg.Connection[Any], pid: int) -> int:
    return int(
        db.execute("SELECT lock_key FROM pgqueue.workers WHERE pid = %s", (pid,)).fetchone()[0]
    )


def test_a_foreign_session_holding_a_dead_workers_key_does_not_delay_its_rescue(
    logins, db, app, monkeypatch
):
    # A heartbeat lease far longer than the wait below: only the liveness lock, gone with the
    # dead worker's claiming backend, can have the job rescued in time.
    grace = 2.0
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps(
            {
                "worker_lost_timeout": 600,
                "worker_rescue_interval": 0.2,
                "worker_reconnect_grace": grace,
            }
        ),
    )
    a = logins.worker(db, "-c", "1", "-P", "threads")
    key = lock_key_of(db, a.pid)
    job = taskapp.slow_record.delay("held-alive", 3)
    wait_for(lambda: runs_of(db, "held-alive") == 1, what="the job to start on A")
    b = logins.worker(db, "-c", "1", "-P", "threads")
    with connect(logins, "producer") as hostile:
        a.signal(signal.SIGKILL)
        a.proc.wait(30)
        killed = time.monotonic()
        # The producer takes A's key the moment A's backend lets it go (any role may).
        wait_for(
            lambda: hostile.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (WORKER_LOCK_CLASS, key)
            ).fetchone()[0],
            what="the hostile session to take the dead worker's key",
        )
        wait_for(lambda: runs_of(db, "held-alive") == 2, timeout=60, what="B to run the job again")
        rescued_after = time.monotonic() - killed
        assert key_holder(db, WORKER_LOCK_CLASS, key) == hostile.info.backend_pid
    assert job.get(timeout=60)["pid"] == b.pid
    assert job.retries == 1
    # The grace, then a rescue pass or two: nowhere near the 600 s heartbeat lease.
    assert grace <= rescued_after < grace + 20, rescued_after


def test_keys_taken_ahead_keep_no_worker_from_starting(logins, db, app):
    (last,) = db.execute(
        "SELECT pg_sequence_last_value("
        "pg_get_serial_sequence('pgqueue.workers', 'lock_key')::regclass)"
    ).fetchone()
    ahead = range((last or 0) + 1, (last or 0) + 51)
    with connect(logins, "producer") as hostile:
        for key in ahead:
            hostile.execute("SELECT pg_advisory_lock(%s, %s)", (WORKER_LOCK_CLASS, key))
        t0 = time.monotonic()
        w = logins.worker(db, "-c", "1", "-P", "threads")
        started = time.monotonic() - t0
        key = lock_key_of(db, w.pid)
        assert key not in ahead
        assert db.execute(
            "SELECT alive FROM pgqueue.worker_status WHERE pid = %s", (w.pid,)
        ).fetchone() == (True,)
        assert taskapp.add.delay(2, 3).get(timeout=30) == 5
    # one key tried after another, not 10 s of waiting on each
    assert started < 15, started


def end_sessions_of(db: psycopg.Connection[Any], pid: int) -> None:
    """Terminate a worker's own sessions (claims, outcomes, listener), as a blip would."""
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"pgqueue %:{pid}",),
    )


def test_a_worker_whose_key_was_taken_during_a_blip_keeps_its_jobs(logins, db, app, monkeypatch):
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps({"worker_rescue_interval": 0.2, "worker_reconnect_grace": 10.0}),
    )
    a = logins.worker(db, "-c", "1", "-P", "threads")
    key = lock_key_of(db, a.pid)
    job = taskapp.slow_record.delay("blip", 3)
    wait_for(lambda: runs_of(db, "blip") == 1, what="the job to start on A")
    with connect(logins, "producer") as hostile:
        # A freezes (its task thread too) and loses its backends; the producer takes its key
        # before A comes back.
        a.signal(signal.SIGSTOP)
        try:
            end_sessions_of(db, a.pid)
            wait_for(
                lambda: hostile.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (WORKER_LOCK_CLASS, key)
                ).fetchone()[0],
                what="the hostile session to take A's key",
            )
        finally:
            a.signal(signal.SIGCONT)
        wait_for(lambda: "database connection restored" in a.output(), what="A to reconnect")
        # A drew another key, and holds it from its own claiming backend: alive again
        assert lock_key_of(db, a.pid) != key
        assert db.execute(
            "SELECT alive FROM pgqueue.worker_status WHERE pid = %s", (a.pid,)
        ).fetchone() == (True,)
        assert job.get(timeout=30)["pid"] == a.pid
    assert job.retries == 0
    assert runs_of(db, "blip") == 1


# -- the shared stats sample ------------------------------------------------------------------


def sample(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Ready jobs by queue, from the shared sample refreshed if older than 0 s."""
    rows = conn.execute(queries.get("ops_sampled_queue_stats"), {"max_age": 0}).fetchall()
    return {r[0]: r[1] for r in rows}


def test_a_held_sample_key_does_not_keep_the_sample_stale(logins, with_outsider, db, app):
    with (
        connect(logins, "producer") as producer,
        connect(logins, "outsider") as outsider,
        logins.connect("operator") as operator,
        logins.connect("worker") as worker_conn,
        logins.connect("worker") as refreshing,
    ):
        for conn in (producer, outsider, operator):
            cannot_lock_rows(conn, "pgqueue.queue_stats_sampled", "sampled_at")
        producer.execute("SELECT pg_advisory_lock(%s)", (SAMPLE_KEY,))
        taskapp.add.apply_async((1, 1), queue="sampled")
        assert sample(worker_conn) == {"sampled": 1}
        taskapp.add.apply_async((1, 1), queue="sampled")
        assert sample(worker_conn) == {"sampled": 2}
        # A refresh under way (the row locked) is not waited for: the previous sample
        # comes back at once.
        with refreshing.transaction():
            refreshing.execute("SELECT 1 FROM pgqueue.queue_stats_sampled FOR UPDATE")
            taskapp.add.apply_async((1, 1), queue="sampled")
            worker_conn.execute("SET lock_timeout = '5s'")
            t0 = time.monotonic()
            assert sample(worker_conn) == {"sampled": 2}
            assert time.monotonic() - t0 < 4
        assert sample(worker_conn) == {"sampled": 3}
