"""The worker against a real Postgres, in real processes."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time

import pytest

from pgqueue import states
from pgqueue.exceptions import EncodeError, TaskRevokedError
from tests import taskapp
from tests.conftest import ROOT, wait_for


def test_job_enqueued_in_a_committed_transaction_runs(app, dsn, worker):
    import psycopg

    worker("-c", "1")
    with psycopg.connect(dsn) as conn, app.transaction(conn):
        result = taskapp.add.delay(20, 22)
    assert result.get(timeout=30) == 42
    assert result.state == states.SUCCESS
    assert result.time_taken is not None and result.time_taken >= 0
    assert result.date_done is not None


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_each_pool_runs_sync_and_async_tasks(app, worker, pool):
    worker("-P", pool, "-c", "2")
    assert taskapp.add.delay(1, 2).get(timeout=30) == 3
    assert taskapp.async_add.delay(2, 3).get(timeout=30) == 5


def test_countdown_and_eta_jobs_do_not_start_early_and_start_soon_after(app, db, worker):
    worker("-c", "2")
    enqueued = db.execute("SELECT now()").fetchone()[0]
    by_countdown = taskapp.now_ns.apply_async(countdown=2)
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
    by_eta = taskapp.now_ns.apply_async(eta=eta)
    by_countdown.get(timeout=30)
    by_eta.get(timeout=30)
    started = dict(db.execute("SELECT task_id::text, date_started FROM pgqueue.results").fetchall())
    assert started[by_countdown.id] >= enqueued + dt.timedelta(seconds=2)
    assert started[by_eta.id] >= eta
    # "soon after": generous bounds, this is not a latency benchmark
    assert started[by_countdown.id] < enqueued + dt.timedelta(seconds=12)
    assert started[by_eta.id] < eta + dt.timedelta(seconds=10)


def test_countdown_job_waits_its_time(app, db, worker):
    worker("-c", "1")
    before = time.time()
    r = taskapp.now_ns.apply_async(countdown=2)
    ran_at = r.get(timeout=30) / 1e9
    assert ran_at - before >= 1.9


def test_expired_jobs_never_run_and_end_revoked(app, db, worker):
    taskapp.record.apply_async(("late",), expires=dt.datetime(2000, 1, 1))
    r = taskapp.record.apply_async(("soon",), countdown=1, expires=0.5)
    ok = taskapp.record.delay("ok")
    worker("-c", "1")
    assert ok.get(timeout=30)
    with pytest.raises(TaskRevokedError, match="expired"):
        r.get(timeout=30)
    assert r.state == states.REVOKED
    assert [t for (t,) in db.execute("SELECT tag FROM test_runs")] == ["ok"]
    revoked = db.execute("SELECT count(*) FROM pgqueue.results WHERE state = 'REVOKED'")
    assert revoked.fetchone()[0] == 2


def test_higher_priority_runs_first_then_earlier_run_at_then_enqueue_order(app, worker):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    low = [taskapp.now_ns.apply_async(priority=0) for _ in range(3)]
    old_low = taskapp.now_ns.apply_async(priority=0, eta=past)
    high = [taskapp.now_ns.apply_async(priority=5) for _ in range(3)]
    worker("-P", "solo", "--prefetch-multiplier", "1")
    order = sorted([*low, old_low, *high], key=lambda r: r.get(timeout=30))
    assert order == [*high, old_low, *low]


def test_two_workers_run_2000_jobs_exactly_once(app, db, worker):
    results = app.enqueue_many([taskapp.record.s(f"job-{i}") for i in range(2000)])
    worker("-c", "2")
    worker("-c", "2", "-P", "threads")
    wait_for(
        lambda: db.execute("SELECT count(*) = 0 FROM pgqueue.jobs").fetchone()[0],
        timeout=120,
        what="all jobs to finish",
    )
    runs = db.execute("SELECT count(*), count(DISTINCT tag), count(DISTINCT pid) FROM test_runs")
    total, distinct, pids = runs.fetchone()
    assert (total, distinct) == (2000, 2000)
    assert pids >= 2  # both workers took part
    done = db.execute("SELECT count(*) FROM pgqueue.results WHERE state = 'SUCCESS'")
    assert done.fetchone()[0] == 2000
    assert results[0].successful()


def test_a_failing_task_becomes_failure_with_its_traceback_and_worker_goes_on(app, worker):
    worker("-c", "1")
    bad = taskapp.fail.delay("broken glass")
    with pytest.raises(ValueError, match="broken glass") as caught:
        bad.get(timeout=30)
    assert caught.value.exc_type == "ValueError"
    assert "raise ValueError(message)" in caught.value.remote_traceback
    assert bad.failed() and bad.state == states.FAILURE
    assert "taskapp.py" in bad.traceback
    assert isinstance(bad.result, ValueError)
    assert bad.get(timeout=1, propagate=False).exc_message == "broken glass"
    # a result JSON cannot carry fails the task, clearly, and the worker keeps going
    unjsonable = taskapp.returns_set.delay()
    with pytest.raises(EncodeError, match="cannot be stored as JSON"):
        unjsonable.get(timeout=30)
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2


def test_get_times_out_on_a_job_nobody_runs(app):
    from pgqueue.exceptions import TimeoutError as PgqTimeout

    r = taskapp.add.delay(1, 2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        r.get(timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(PgqTimeout, match="PENDING"):
        r.get(timeout=0.1)


def test_get_wakes_on_notify_without_polling(app, worker):
    worker("-c", "1")
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2  # warm
    r = taskapp.sleep.delay(0.5)
    started = time.monotonic()
    # interval far above the wait: only the NOTIFY can wake get() in time
    assert r.get(timeout=30, interval=20) == 0.5
    assert time.monotonic() - started < 10


def test_forget_deletes_the_result(app, worker):
    worker("-c", "1")
    r = taskapp.add.delay(1, 1)
    assert r.get(timeout=30) == 2
    r.forget()
    assert app.AsyncResult(r.id).state == states.PENDING


def test_job_for_a_task_no_worker_knows_waits_and_is_not_lost(app, db, worker):
    unknown = app.send_task("tests.nobody_has_this", args=[1])
    worker("-c", "1")
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2
    row = db.execute("SELECT worker_id, state FROM pgqueue.jobs WHERE id = %s", (unknown.id,))
    assert row.fetchone() == (None, "PENDING")


def test_worker_only_consumes_its_queues(app, db, worker):
    email = taskapp.send_email.delay("a@b.c")
    worker("-c", "1")
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2
    assert email.state == states.PENDING
    worker("-c", "1", "-Q", "emails")
    assert email.get(timeout=30) == "sent to a@b.c"


def test_started_state_is_visible_while_running(app, db, worker):
    worker("-c", "1")
    r = taskapp.sleep.delay(2)
    wait_for(lambda: r.state == states.STARTED, timeout=30, what="STARTED")
    assert r.get(timeout=30) == 2


def test_warm_shutdown_finishes_running_task_and_puts_unstarted_back(app, db, worker):
    w = worker("-c", "1", "--prefetch-multiplier", "4")
    jobs = app.enqueue_many([taskapp.sleep.s(1.5) for _ in range(4)])
    wait_for(
        lambda: (
            db.execute("SELECT count(*) FROM pgqueue.jobs WHERE worker_id IS NOT NULL").fetchone()[
                0
            ]
            == 4
        ),
        what="the worker to claim all four",
    )
    wait_for(lambda: any(j.state == states.STARTED for j in jobs), what="one to start")
    w.signal(signal.SIGTERM)
    assert w.proc.wait(60) == 0, w.output()
    finished = [j for j in jobs if j.state == states.SUCCESS]
    assert len(finished) == 1
    back = db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE worker_id IS NULL AND state = 'PENDING'"
    ).fetchone()[0]
    assert back == 3
    assert db.execute("SELECT count(*) FROM pgqueue.workers").fetchone()[0] == 0
    # and another worker picks them up straight away
    worker("-c", "2")
    assert all(j.get(timeout=60) == 1.5 for j in jobs)


def test_idle_worker_wakes_on_notify(app, worker):
    # poll interval far beyond the bound: only LISTEN/NOTIFY can start the job in time
    from pgqueue import conf

    assert conf.DEFAULTS["worker_poll_interval"] >= 5
    worker("-c", "1")
    taskapp.add.delay(0, 0).get(timeout=30)
    started = time.time()
    ran = taskapp.now_ns.delay().get(timeout=30) / 1e9
    assert ran - started < 2.5


def test_worker_without_schema_exits_with_one_clear_line(bare_postgresql):
    from tests.conftest import dsn_of

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgqueue.cli",
            "--dsn",
            dsn_of(bare_postgresql),
            "worker",
            "-A",
            "tests.taskapp:app",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "run `pgqueue migrate`" in proc.stderr
    assert "Traceback" not in proc.stderr
