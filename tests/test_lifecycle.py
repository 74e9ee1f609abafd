"""The task lifecycle: retries, time limits, revocation, crash recovery, outages, housekeeping.

Every test uses real worker processes, real signals and a real Postgres.
"""

from __future__ import annotations

import itertools
import json
import os
import signal

import psycopg
import pytest

from pgqueue import states
from pgqueue.exceptions import MaxRetriesExceededError, TaskRevokedError
from tests import taskapp
from tests.conftest import wait_for


def runs(db, tag: str) -> list:
    return [r[0] for r in db.execute("SELECT at FROM test_runs WHERE tag = %s ORDER BY at", (tag,))]


# -- retries ------------------------------------------------------------------------------


def test_retry_with_countdown_goes_back_to_the_queue_and_counts(app, db, worker):
    worker("-c", "2")
    r = taskapp.flaky.delay("f", 2)
    assert r.get(timeout=30) == 2
    assert r.retries == 2
    assert len(runs(db, "f")) == 3


def test_retry_state_is_visible_between_attempts(app, db, worker):
    worker("-c", "1")
    r = taskapp.always_retry.apply_async(("vis",))
    wait_for(lambda: r.state == states.RETRY, what="RETRY state")
    assert r.retries >= 1
    row = db.execute("SELECT exc_type FROM pgqueue.jobs WHERE id = %s", (r.id,)).fetchone()
    assert row is None or row[0] == "OSError"


def test_exhausted_retries_reraise_the_exc_given_to_retry(app, db, worker):
    worker("-c", "1")
    r = taskapp.always_retry.delay("exc")
    with pytest.raises(OSError, match="disk on fire"):
        r.get(timeout=30)
    assert r.state == states.FAILURE
    assert r.retries == 2
    assert len(runs(db, "exc")) == 3


def test_exhausted_retries_without_exc_raise_max_retries_exceeded(app, worker):
    worker("-c", "1")
    r = taskapp.always_retry.delay("noexc", with_exc=False)
    with pytest.raises(MaxRetriesExceededError, match="max retries"):
        r.get(timeout=30)


def test_max_retries_per_call_overrides_the_task(app, db, worker):
    worker("-c", "1")
    r = taskapp.always_retry.apply_async(("percall",), max_retries=0)
    with pytest.raises(OSError):
        r.get(timeout=30)
    assert len(runs(db, "percall")) == 1


def test_autoretry_with_exponential_backoff_bounds_and_max(app, db, worker):
    worker("-c", "1")
    r = taskapp.auto_backoff.delay("auto")
    with pytest.raises(OSError, match="still broken"):
        r.get(timeout=60)
    times = runs(db, "auto")
    assert len(times) == 4  # first run and max_retries=3
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # countdowns 0.3, 0.6, then capped by retry_backoff_max at 0.7
    for gap, low in zip(gaps, [0.3, 0.6, 0.7], strict=True):
        assert low - 0.05 <= gap < low + 5


def test_retry_backoff_per_call_overrides_the_task(app, db, worker):
    worker("-c", "1")
    r = taskapp.auto_backoff.apply_async(
        ("percall-backoff",), retry_backoff=0.05, retry_backoff_max=0.05
    )
    with pytest.raises(OSError):
        r.get(timeout=60)
    times = runs(db, "percall-backoff")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(g < 0.6 for g in gaps)  # far below the task's own 0.3/0.6/0.7


def test_max_retries_none_retries_until_it_succeeds(app, db, worker):
    worker("-c", "1")
    assert taskapp.forever.delay("forever", 7).get(timeout=60) == 7
    assert len(runs(db, "forever")) == 8


def test_request_carries_the_call(app, worker):
    worker("-c", "1")
    r = taskapp.request_info.apply_async((1, "a"), {"k": [1]}, expires=600)
    info = r.get(timeout=30)
    assert info["id"] == r.id
    assert info["retries"] == 0
    assert info["args"] == [1, "a"]
    assert info["kwargs"] == {"k": [1]}
    assert info["hostname"].startswith("pgqueue@")
    assert info["eta"] and info["expires"]


def test_ignore_ends_the_job_ignored(app, worker):
    worker("-c", "1")
    r = taskapp.ignored.delay()
    wait_for(lambda: r.state == states.IGNORED, what="IGNORED")
    assert r.ready()


# -- time limits ----------------------------------------------------------------------------


def test_soft_time_limit_is_raised_inside_the_task_so_it_can_clean_up(app, worker):
    worker("-c", "1")
    assert taskapp.soft_limited.delay().get(timeout=30) == "cleaned up"


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_soft_time_limit_in_threads_and_solo(app, worker, pool):
    worker("-P", pool, "-c", "1")
    assert taskapp.soft_limited.delay().get(timeout=30) == "cleaned up"


def test_soft_time_limit_per_call(app, worker):
    from pgqueue.exceptions import SoftTimeLimitExceeded

    worker("-c", "1")
    r = taskapp.sleep.apply_async((30,), soft_time_limit=0.5)
    with pytest.raises(SoftTimeLimitExceeded):
        r.get(timeout=30)


def test_hard_time_limit_kills_the_child_and_replaces_it(app, worker):
    from pgqueue.exceptions import TimeLimitExceeded

    worker("-c", "1")
    before = taskapp.pid.delay().get(timeout=30)
    r = taskapp.hard_limited.delay()
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=30)
    after = taskapp.pid.delay().get(timeout=30)
    assert after != before
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)


def test_hard_time_limit_follows_the_retry_policy(app, db, worker):
    worker("-c", "1")
    r = taskapp.hard_limited_retried.delay("hard-retry")
    with pytest.raises(Exception, match="TimeLimitExceeded"):
        r.get(timeout=60)
    assert r.retries == 1
    assert len(runs(db, "hard-retry")) == 2


def test_time_limits_from_the_command_line_and_per_call(app, worker):
    from pgqueue.exceptions import TimeLimitExceeded

    worker("-c", "1", "--time-limit", "1")
    with pytest.raises(TimeLimitExceeded):
        taskapp.sleep.delay(30).get(timeout=30)
    # per call wins over the command line
    assert taskapp.sleep.apply_async((1.5,), time_limit=10).get(timeout=30) == 1.5


def test_global_setting_sets_the_limit(app, worker, monkeypatch):
    from pgqueue.exceptions import TimeLimitExceeded

    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"task_time_limit": 1}))
    worker("-c", "1")
    with pytest.raises(TimeLimitExceeded):
        taskapp.sleep.delay(30).get(timeout=30)


def test_pools_without_hard_limits_say_so_at_start(app, worker):
    w = worker("-P", "threads", "--time-limit", "5")
    assert "cannot enforce hard time limits" in w.output()


def test_a_child_that_dies_fails_its_job_and_is_replaced(app, worker):
    from pgqueue.exceptions import WorkerLostError

    worker("-c", "1")
    with pytest.raises(WorkerLostError, match="exit code 3"):
        taskapp.crash_child.delay().get(timeout=30)
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2


def test_max_tasks_per_child_replaces_children(app, worker):
    worker("-c", "1", "--max-tasks-per-child", "2")
    pids = [taskapp.pid.delay().get(timeout=30) for _ in range(4)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]


def test_max_memory_per_child_replaces_a_child_over_the_limit(app, worker):
    worker("-c", "1", "--max-memory-per-child", "100000")  # KiB
    first = taskapp.pid.delay().get(timeout=30)
    taskapp.allocate.delay(200).get(timeout=30)
    assert taskapp.pid.delay().get(timeout=30) != first


# -- revocation ---------------------------------------------------------------------------


def test_revoked_queued_job_never_runs(app, db, worker):
    r = taskapp.record.apply_async(("revoked",), countdown=1)
    assert r.revoke() is True
    worker("-c", "1")
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2
    with pytest.raises(TaskRevokedError):
        r.get(timeout=5)
    assert r.state == states.REVOKED
    assert runs(db, "revoked") == []
    assert app.control.revoke(r.id) == []  # already finished: nothing to do


def test_revoke_without_terminate_lets_a_running_task_finish(app, worker):
    worker("-c", "1")
    r = taskapp.sleep.delay(1)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    assert app.control.revoke(r.id) == []
    assert r.get(timeout=30) == 1


def test_revoke_with_terminate_kills_the_running_task(app, db, worker):
    w = worker("-c", "1")
    r = taskapp.slow_record.delay("terminated", 30)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    assert app.control.revoke(r.id, terminate=True) == [r.id]
    assert r.state == states.REVOKED
    wait_for(lambda: "terminated its process" in w.output(), what="the kill")
    assert taskapp.add.delay(2, 2).get(timeout=30) == 4  # a fresh child took over
    assert app.AsyncResult(r.id).state == states.REVOKED


# -- crash recovery and fencing -------------------------------------------------------------


def test_sigkilled_worker_loses_no_job(app, db, worker):
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("crash", 1)
    wait_for(lambda: r.state == states.STARTED, what="STARTED on worker A")
    a.signal(signal.SIGKILL)
    a.proc.wait(30)
    b = worker("-c", "1")
    result = r.get(timeout=60)
    assert result["ppid"] == b.pid
    assert r.retries == 1  # the lost run counts as an attempt
    assert len(runs(db, "crash")) == 2


def test_terminated_backend_is_detected_and_worker_recovers(app, db, worker):
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("cut", 2)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name LIKE 'pgqueue %%' AND datname = current_database()"
    )
    assert r.get(timeout=60)["ppid"] == a.pid
    assert r.retries in (0, 1)  # rescued and rerun by A itself, or finished and written once
    results = db.execute("SELECT count(*) FROM pgqueue.results WHERE task_id = %s", (r.id,))
    assert results.fetchone()[0] == 1
    assert taskapp.add.delay(3, 3).get(timeout=30) == 6
    log = a.output()
    assert log.count("database connection lost") == 1, log
    assert "database connection restored" in log


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cut_worker_connections(db) -> None:
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name LIKE 'pgqueue %%' AND datname = current_database()"
    )


def test_a_claim_whose_reply_was_lost_is_given_back_on_reconnect(app, db, worker):
    a = worker("-c", "1")
    # What a claim looks like when its reply dies with the connection: the row is the
    # worker's, the worker never heard of it. Nobody rescues it while the worker lives.
    with db.transaction():
        r = taskapp.add.apply_async((20, 22), connection=db)
        db.execute(
            "UPDATE pgqueue.jobs SET worker_id = w.id, claimed_at = now(),"
            " attempt = attempt + 1 FROM pgqueue.workers AS w"
            " WHERE w.pid = %s AND pgqueue.jobs.id = %s",
            (a.pid, r.id),
        )
    _cut_worker_connections(db)
    assert r.get(timeout=60) == 42
    wait_for(lambda: "back in the queue" in a.output(), what="the release to be logged")


def test_a_worker_busy_past_its_poll_interval_sleeps_instead_of_spinning(
    app, db, worker, monkeypatch
):
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_poll_interval": 0.2}))
    a = worker("-c", "1", "--prefetch-multiplier", "1")
    r = taskapp.slow_record.delay("busy", 6)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")

    before = _cpu_seconds(a.pid)
    wait_for(lambda: r.ready(), timeout=60, what="the slow task to finish")
    # A spinning loop burns a whole core for the ~6 s the task runs; a sleeping one
    # wakes every 0.2 s for a fallback poll.
    assert _cpu_seconds(a.pid) - before < 2.0
    assert r.get(timeout=5)["ppid"] == a.pid


def test_prefork_sleeps_while_a_task_goes_on_after_its_soft_limit(app, worker):
    a = worker("-c", "1")
    r = taskapp.soft_then_linger.delay(5)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    before = _cpu_seconds(a.pid)
    assert r.get(timeout=60) == "lingered"
    assert _cpu_seconds(a.pid) - before < 2.0


def test_revived_worker_cannot_overwrite_the_result_fencing(app, db, worker):
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("fence", 3)
    wait_for(lambda: r.state == states.STARTED, what="STARTED on A")
    a.signal(signal.SIGSTOP)  # A freezes; its child goes on running the task
    try:
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'pgqueue %%' AND datname = current_database()"
        )
        b = worker("-c", "1")
        result = r.get(timeout=60)
        assert result["ppid"] == b.pid
    finally:
        a.signal(signal.SIGCONT)
    wait_for(lambda: "discarded" in a.output(), timeout=60, what="A to try its late write")
    assert app.AsyncResult(r.id).get(timeout=5)["ppid"] == b.pid
    assert db.execute("SELECT count(*) FROM pgqueue.results").fetchone()[0] == 1


def test_at_most_once_job_lost_with_its_worker_fails_with_worker_lost(app, db, worker):
    from pgqueue.exceptions import WorkerLostError

    a = worker("-c", "1")
    r = taskapp.at_most_once.delay("amo", 30)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    a.signal(signal.SIGKILL)
    a.proc.wait(30)
    worker("-c", "1")
    with pytest.raises(WorkerLostError):
        r.get(timeout=60)
    assert len(runs(db, "amo")) == 1


def test_stale_heartbeat_counts_as_lost(app, db, worker, monkeypatch):
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_lost_timeout": 3}))
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("stale", 2)
    wait_for(lambda: r.state == states.STARTED, what="STARTED on A")
    a.signal(signal.SIGSTOP)  # alive to Postgres (lock held), but silent
    try:
        b = worker("-c", "1")
        assert r.get(timeout=60)["ppid"] == b.pid
    finally:
        a.signal(signal.SIGCONT)


def test_producer_during_an_outage_raises_a_clear_operational_error():
    from pgqueue import PgQueue

    dead = PgQueue("dead", dsn="postgresql://postgres@127.0.0.1:9/x?connect_timeout=2")
    with pytest.raises(psycopg.OperationalError, match="cannot connect"):
        dead.send_task("anything")


# -- housekeeping ---------------------------------------------------------------------------


def test_expired_results_are_removed_by_the_workers(app, db, worker, monkeypatch):
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF", json.dumps({"result_expires": 1, "result_cleanup_interval": 0.5})
    )
    worker("-c", "1")
    r = taskapp.add.delay(1, 2)
    assert r.get(timeout=30) == 3
    wait_for(
        lambda: db.execute("SELECT count(*) FROM pgqueue.results").fetchone()[0] == 0,
        what="the result to expire",
    )
    assert app.AsyncResult(r.id).state == states.PENDING


def test_expired_jobs_of_unknown_tasks_are_revoked_by_the_sweep(app, db, worker):
    gone = app.send_task("nobody.knows", expires=0.5)
    worker("-c", "1")
    wait_for(lambda: app.AsyncResult(gone.id).state == states.REVOKED, what="sweep")


def test_after_100000_jobs_the_jobs_table_holds_only_live_jobs(app, db, worker):
    ids = []
    for start in range(0, 100_000, 20_000):
        ids += app.enqueue_many(
            [taskapp.add.s(i, 1).set(ignore_result=True) for i in range(start, start + 20_000)]
        )
    future = taskapp.add.apply_async((0, 0), countdown=3600)
    worker("-c", "2", "--loglevel", "WARNING")
    wait_for(
        lambda: db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] == 1,
        timeout=240,
        what="100,000 jobs to run",
    )
    assert db.execute("SELECT id::text FROM pgqueue.jobs").fetchone()[0] == future.id
    # with 100,000 future jobs queued, the claim still walks the index
    db.execute(
        "INSERT INTO pgqueue.jobs (id, task_name, run_at)"
        " SELECT gen_random_uuid(), 'tests.taskapp.add', now() + interval '1 day'"
        " FROM generate_series(1, 100000)"
    )
    db.execute("ANALYZE pgqueue.jobs")
    from pgqueue import queries

    plan = "\n".join(
        r[0]
        for r in db.execute(
            "EXPLAIN " + queries.get("claim_jobs"),
            {
                "queues": ["default"],
                "tasks": ["tests.taskapp.add"],
                "limit": 10,
                "worker_id": "00000000-0000-0000-0000-000000000000",
            },
        )
    )
    assert "jobs_claim_idx" in plan, plan


def test_workers_vacuum_the_jobs_table_where_autovacuum_is_off(app, db):
    from pgqueue.maintenance import Maintenance
    from pgqueue.worker import WORKER_LOCK_CLASS

    if db.execute("SELECT current_setting('autovacuum')").fetchone()[0] != "off":
        pytest.skip("autovacuum is on here: workers leave vacuuming to it")
    app.enqueue_many([taskapp.add.s(i, i) for i in range(100)])
    db.execute("DELETE FROM pgqueue.jobs")
    with app.connect() as conn:
        Maintenance(app, lock_class=WORKER_LOCK_CLASS).vacuum(conn)
    vacuumed = db.execute(
        "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables"
        " WHERE relid = 'pgqueue.jobs'::regclass"
    ).fetchone()[0]
    assert vacuumed is True
