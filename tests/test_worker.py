"""The worker against a real Postgres, in real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pgqueue import states
from pgqueue.exceptions import EncodeError, TaskRevokedError
from tests import taskapp
from tests.conftest import ROOT, WorkerProcess, cpu_seconds, wait_for


def _slow_fallback_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started after this poll only once a minute: whatever starts a job within a
    few seconds is a notification or the wake-up at the earliest run_at, not the poll."""
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_poll_interval": 60}))


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_heartbeats(db, w: WorkerProcess, beats: int) -> None:
    """Wait until the worker has refreshed its heartbeat ``beats`` more times (every 2 s):
    time passes, and the worker is seen alive all along."""

    def heartbeat() -> dt.datetime:
        if w.proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{w.output()}")
        row = db.execute("SELECT heartbeat_at FROM pgqueue.workers WHERE pid = %s", (w.pid,))
        return row.fetchone()[0]

    for _ in range(beats):
        last = heartbeat()
        wait_for(lambda last=last: heartbeat() > last, timeout=30, what="a heartbeat")


def test_job_enqueued_in_a_committed_transaction_runs(app, dsn, worker):
    import psycopg

    worker("-c", "1")
    with psycopg.connect(dsn) as conn, app.transaction(conn):
        result = taskapp.add.delay(20, 22)
    assert result.get(timeout=30) == 42
    assert result.state == states.SUCCESS
    assert result.time_taken is not None and result.time_taken >= 0
    assert result.date_done is not None


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
def test_each_pool_runs_sync_and_async_tasks(app, worker, pool):
    worker("-P", pool, "-c", "2")
    assert taskapp.add.delay(1, 2).get(timeout=30) == 3
    assert taskapp.async_add.delay(2, 3).get(timeout=30) == 5


def test_countdown_and_eta_jobs_do_not_start_early_and_start_soon_after(
    app, db, worker, monkeypatch
):
    # With the fallback poll a minute away, only the wake-up at the earliest run_at can
    # start these in time: the worker has to sleep until run_at, not until the next poll.
    _slow_fallback_poll(monkeypatch)
    worker("-c", "2")
    by_countdown = taskapp.now_ns.apply_async(countdown=2)
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
    by_eta = taskapp.now_ns.apply_async(eta=eta)
    run_at = dict(db.execute("SELECT id::text, run_at FROM pgqueue.jobs").fetchall())
    assert run_at[by_eta.id] == eta
    by_countdown.get(timeout=30)
    by_eta.get(timeout=30)
    started = dict(db.execute("SELECT task_id::text, date_started FROM pgqueue.results").fetchall())
    for job in (by_countdown, by_eta):
        # "soon after": a generous bound, this is not a latency benchmark
        assert run_at[job.id] <= started[job.id] < run_at[job.id] + dt.timedelta(seconds=3)


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


def test_a_job_that_expires_while_claimed_but_waiting_is_not_started(app, db, worker):
    worker("-c", "1", "--prefetch-multiplier", "4")
    busy = taskapp.sleep.delay(3)
    wait_for(lambda: busy.state == states.STARTED, what="the slot to be taken")
    r = taskapp.record.apply_async(("waited",), expires=1)
    claimed_in_time = wait_for(
        lambda: db.execute(
            "SELECT claimed_at < expires_at FROM pgqueue.jobs"
            " WHERE id = %s AND worker_id IS NOT NULL",
            (r.id,),
        ).fetchone(),
        what="the worker to claim the job into its buffer",
    )
    assert claimed_in_time == (True,)  # the claim found it unexpired...
    with pytest.raises(TaskRevokedError, match="expired"):  # ...but it expired meanwhile
        r.get(timeout=30)
    assert busy.get(timeout=30) == 3
    assert db.execute("SELECT count(*) FROM test_runs").fetchone()[0] == 0


# A worker whose own clock is off by TEST_CLOCK_SKEW seconds, wherever pgqueue reads it with
# datetime.now() (the datetime module itself is left alone: pickling to prefork children
# needs the real class): a worker must go by the database's clock alone.
_SKEWED_WORKER = """
import datetime, os, sys, types
import pgqueue.cli, pgqueue.execution, pgqueue.pools, pgqueue.worker

_skew = datetime.timedelta(seconds=float(os.environ["TEST_CLOCK_SKEW"]))

class _Skewed(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.now(tz) + _skew

_dt = types.SimpleNamespace(**{**vars(datetime), "datetime": _Skewed})
for module in list(sys.modules.values()):
    if module.__name__.startswith("pgqueue") and hasattr(module, "dt"):
        module.dt = _dt
pgqueue.cli.main()
"""


@pytest.mark.parametrize("skew", [3600, -3600], ids=["ahead", "behind"])
def test_a_worker_with_its_clock_off_goes_by_the_database_clock(
    app, db, dsn, monkeypatch, tmp_path, skew
):
    _slow_fallback_poll(monkeypatch)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SKEWED_WORKER, "worker", "-A", "tests.taskapp:app"],
            cwd=ROOT,
            env={**os.environ, "PGQUEUE_DSN": dsn, "TEST_CLOCK_SKEW": str(skew)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def registered() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited:\n{log.read_text()}")
            row = db.execute("SELECT 1 FROM pgqueue.workers WHERE pid = %s", (proc.pid,))
            return row.fetchone() is not None

        wait_for(registered, what="the worker to register")
        # Ahead, a worker by its own clock would take this for expired long ago...
        expiring = taskapp.add.apply_async((1, 2), expires=60)
        assert expiring.get(timeout=30) == 3, log.read_text()
        # ...behind, it would sleep for an hour before this one (the poll: a minute).
        later = taskapp.now_ns.apply_async(countdown=2)
        (run_at,) = db.execute(
            "SELECT run_at FROM pgqueue.jobs WHERE id = %s", (later.id,)
        ).fetchone()
        later.get(timeout=30)
        (started,) = db.execute(
            "SELECT date_started FROM pgqueue.results WHERE task_id = %s", (later.id,)
        ).fetchone()
        assert run_at <= started < run_at + dt.timedelta(seconds=3)
    finally:
        proc.terminate()
        proc.wait(60)


def test_higher_priority_runs_first_then_earlier_run_at_then_enqueue_order(app, worker):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    low = [taskapp.now_ns.apply_async(priority=0) for _ in range(3)]
    old_low = taskapp.now_ns.apply_async(priority=0, eta=past)
    high = [taskapp.now_ns.apply_async(priority=5) for _ in range(3)]
    worker("-P", "solo", "--prefetch-multiplier", "1")
    order = sorted([*low, old_low, *high], key=lambda r: r.get(timeout=30))
    assert order == [*high, old_low, *low]


def test_two_workers_run_2000_jobs_exactly_once(app, db, worker):
    # Both are up before the jobs arrive, so both claim from the start.
    worker("-c", "2", "-n", "first")
    worker("-c", "2", "-P", "threads", "-n", "second")
    results = app.enqueue_many([taskapp.record.s(f"job-{i}") for i in range(2000)])
    wait_for(
        lambda: db.execute("SELECT count(*) = 0 FROM pgqueue.jobs").fetchone()[0],
        timeout=120,
        what="all jobs to finish",
    )
    runs = db.execute("SELECT count(*), count(DISTINCT tag) FROM test_runs")
    assert runs.fetchone() == (2000, 2000)
    workers = db.execute("SELECT DISTINCT worker FROM pgqueue.results ORDER BY worker")
    assert [w for (w,) in workers] == ["first", "second"]  # both workers took part
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
    # Postgres text holds no NUL: a result with one fails its task alone, and an error
    # message with one is stored with the character replaced, not lost with its batch
    with pytest.raises(EncodeError, match="NUL character"):
        taskapp.returns_nul.delay().get(timeout=30)
    with pytest.raises(ValueError, match="broken\ufffdglass"):
        taskapp.fail_with_nul.delay().get(timeout=30)
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_warm_shutdown_finishes_running_task_and_puts_unstarted_back(app, db, worker, sig):
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
    w.signal(sig)
    assert w.proc.wait(60) == 0, w.output()
    assert "warm shutdown" in w.output()
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


def test_a_second_signal_during_warm_shutdown_exits_at_once(app, db, worker):
    w = worker("-c", "1")
    r = taskapp.slow_record.delay("long", 120)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    (child,) = wait_for(
        lambda: db.execute("SELECT pid FROM test_runs WHERE tag = 'long'").fetchone(),
        what="the task to record its process",
    )
    w.signal(signal.SIGTERM)
    wait_for(lambda: "warm shutdown" in w.output(), what="the warm shutdown to begin")
    _wait_heartbeats(db, w, 1)  # the first signal waits for the running task
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.proc.wait(30) == 1, w.output()
    assert time.monotonic() - sent < 10, "the second signal waited for the task"
    assert "cold shutdown" in w.output()
    wait_for(lambda: not _alive(child), timeout=10, what="the task's process to be killed")
    # Never finished: the job stays with the gone worker until a live one rescues it.
    assert r.state == states.STARTED


def test_prefork_runs_tasks_at_the_same_time_in_separate_child_processes(app, db, worker):
    w = worker("-c", "2")
    jobs = app.enqueue_many([taskapp.slow_record.s(tag, 2) for tag in ("a", "b")])
    ran = [job.get(timeout=60) for job in jobs]
    assert {r["ppid"] for r in ran} == {w.pid}  # children of the worker...
    assert ran[0]["pid"] != ran[1]["pid"]  # ...two of them
    # Each task's span, by child pid: from its start, as the task recorded it, to its
    # outcome written. One child running both in turn would start the second after the
    # first's outcome was written.
    starts = dict(db.execute("SELECT pid, at FROM test_runs").fetchall())
    ends = dict(
        db.execute("SELECT (result->>'pid')::int, date_done FROM pgqueue.results").fetchall()
    )
    assert starts.keys() == ends.keys() == {r["pid"] for r in ran}
    assert max(starts.values()) < min(ends.values())  # the two spans overlap


@pytest.mark.parametrize("future_job", [False, True], ids=["nothing-queued", "a-future-job"])
def test_an_idle_worker_does_not_busy_poll(app, db, worker, future_job):
    w = worker("-c", "1")
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2  # past start-up
    later = taskapp.add.apply_async((2, 2), countdown=600) if future_job else None
    before, since = cpu_seconds(w.pid), time.monotonic()
    _wait_heartbeats(db, w, 3)
    used, idle = cpu_seconds(w.pid) - before, time.monotonic() - since
    # A loop that polls without blocking burns a whole core; an idle worker sleeps on
    # LISTEN, waking for maintenance every 2 s and the fallback poll every 5 s.
    assert idle >= 3.5  # three heartbeats, 2 s apart
    assert used < 0.1 * idle, f"{used:.2f} s of CPU in {idle:.1f} s idle"
    assert taskapp.add.delay(3, 3).get(timeout=30) == 6  # and it still answers at once
    if later is not None:
        assert later.state == states.PENDING


def test_idle_worker_wakes_on_notify_not_the_fallback_poll(app, db, worker, monkeypatch):
    _slow_fallback_poll(monkeypatch)
    w = worker("-c", "1")
    assert taskapp.add.delay(0, 0).get(timeout=30) == 0  # past start-up
    _wait_heartbeats(db, w, 1)  # idle, asleep on LISTEN
    (before,) = db.execute("SELECT clock_timestamp()").fetchone()
    r = taskapp.add.delay(1, 2)
    assert r.get(timeout=30) == 3  # the poll alone would take up to 60 s
    (started,) = db.execute(
        "SELECT date_started FROM pgqueue.results WHERE task_id = %s", (r.id,)
    ).fetchone()
    assert started - before < dt.timedelta(seconds=2)


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


def test_outcome_is_written_while_other_tasks_still_run(app, worker):
    # Outcomes of a busy pool are batched for a few milliseconds, not held until it idles.
    worker("-P", "threads", "-c", "2")
    long = taskapp.sleep.delay(20)
    wait_for(lambda: long.state == states.STARTED, what="the long task to start")
    quick = taskapp.add.delay(2, 2)
    assert quick.get(timeout=10) == 4
    assert long.state == states.STARTED
    long.revoke(terminate=True)
