"""The task lifecycle: retries, time limits, revocation, crash recovery, outages, housekeeping.

Every test uses real worker processes, real signals and a real Postgres.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import signal

import psycopg
import pytest

from pgqueue import states
from pgqueue.exceptions import MaxRetriesExceededError, TaskRevokedError
from pgqueue.policy import backoff_countdown
from tests import taskapp
from tests.conftest import cpu_seconds, wait_for


def runs(db, tag: str) -> list:
    return [r[0] for r in db.execute("SELECT at FROM test_runs WHERE tag = %s ORDER BY at", (tag,))]


def count_result_writes(db) -> None:
    """From now on, log every write of a result row to test_runs (tag ``result:<id>``).

    A count of result rows cannot show a second write: task_id is the key and the write is
    an upsert. This trigger sees each insert and each update.
    """
    db.execute(
        "CREATE FUNCTION public.test_result_written() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO public.test_runs (tag) VALUES ('result:' || NEW.task_id);"
        " RETURN NULL; END $$"
    )
    db.execute(
        "CREATE TRIGGER test_result_written AFTER INSERT OR UPDATE ON pgqueue.results"
        " FOR EACH ROW EXECUTE FUNCTION public.test_result_written()"
    )


def result_writes(db, task_id: str) -> int:
    return len(runs(db, f"result:{task_id}"))


def gaps_between(times: list) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


# -- retries ------------------------------------------------------------------------------


def test_retry_with_countdown_goes_back_to_the_queue_and_counts(app, db, worker):
    worker("-c", "2")
    r = taskapp.flaky.delay("f", 2)
    assert r.get(timeout=30) == 2
    assert r.retries == 2
    assert len(runs(db, "f")) == 3


def test_retry_state_is_visible_between_attempts(app, db, worker):
    worker("-c", "1")
    # a 30 s countdown: the job stays in RETRY while the test looks at it
    r = taskapp.always_retry.apply_async(("vis",), {"delay": 30})
    wait_for(lambda: r.state == states.RETRY, what="RETRY state")
    assert r.retries == 1
    exc_type, exc_message, due_in = db.execute(
        "SELECT exc_type, exc_message, run_at - now() FROM pgqueue.jobs WHERE id = %s", (r.id,)
    ).fetchone()
    assert (exc_type, exc_message) == ("OSError", "disk on fire")
    assert dt.timedelta(seconds=20) < due_in <= dt.timedelta(seconds=30)
    assert len(runs(db, "vis")) == 1


def test_retry_with_eta_runs_the_next_attempt_at_that_time(app, db, worker):
    worker("-c", "1")
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    r = taskapp.retry_at.delay("eta", eta.isoformat())
    wait_for(lambda: r.state == states.RETRY, what="RETRY state")
    (run_at,) = db.execute("SELECT run_at FROM pgqueue.jobs WHERE id = %s", (r.id,)).fetchone()
    assert run_at == eta  # not the task's default_retry_delay (180 s)
    assert dt.datetime.fromisoformat(r.get(timeout=30)) == eta  # the retry's request.eta
    assert len(runs(db, "eta")) == 2
    assert runs(db, "eta")[1] >= eta


def test_retry_with_new_args_and_kwargs_changes_the_next_attempt(app, db, worker):
    worker("-c", "1")
    r = taskapp.retry_with_new_args.delay("na", 0, note="orig")
    assert r.get(timeout=30) == {"args": ["na", 1], "kwargs": {"note": "changed"}, "retries": 2}
    tags = [t for (t,) in db.execute("SELECT tag FROM test_runs WHERE tag LIKE 'na:%' ORDER BY at")]
    # args alone keep the kwargs; kwargs alone keep the args
    assert tags == ["na:0:orig", "na:1:orig", "na:1:changed"]


def test_retry_refuses_options_it_cannot_change(app, worker):
    worker("-c", "1")
    with pytest.raises(TypeError, match="retry\\(\\) cannot change queue"):
        taskapp.retry_elsewhere.delay().get(timeout=30)


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


def test_max_retries_none_per_call_retries_for_ever_and_omitting_it_keeps_the_task_default(
    app, db, worker
):
    worker("-c", "1")
    # flaky has max_retries=5 and fails 7 times here
    forever = taskapp.flaky.apply_async(("pc-forever", 7), max_retries=None)
    assert forever.get(timeout=60) == 7
    assert len(runs(db, "pc-forever")) == 8
    default = taskapp.flaky.apply_async(("pc-default", 7))
    with pytest.raises(OSError, match="attempt 5"):
        default.get(timeout=60)
    assert len(runs(db, "pc-default")) == 6


def test_autoretry_with_exponential_backoff_bounds_and_max(app, db, worker):
    worker("-c", "1")
    r = taskapp.auto_backoff.delay("auto")
    with pytest.raises(OSError, match="still broken"):
        r.get(timeout=60)
    times = runs(db, "auto")
    assert len(times) == 4  # first run and max_retries=3
    gaps = gaps_between(times)
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
    assert len(times) == 4  # the per-call backoff leaves the task's max_retries=3 alone
    gaps = gaps_between(times)
    assert all(g < 0.6 for g in gaps)  # far below the task's own 0.3/0.6/0.7


def test_retry_jitter_picks_delays_between_zero_and_the_backoff(app):
    # The delay for each retry count, many times over: within [0, cap], and spread out.
    task = taskapp.jittered  # retry_backoff=1, retry_backoff_max=1
    for retries, cap in [(0, 1.0), (3, 1.0)]:
        delays = [backoff_countdown(task, retries, {}) for _ in range(2000)]
        assert all(0 <= d <= cap for d in delays)
        assert min(delays) < 0.1 * cap and max(delays) > 0.9 * cap
    uncapped = {"retry_backoff_max": 600}
    delays = [backoff_countdown(task, 3, uncapped) for _ in range(2000)]
    assert all(0 <= d <= 8 for d in delays) and max(delays) > 7
    assert backoff_countdown(task, 3, {**uncapped, "retry_jitter": False}) == 8


def test_retry_jitter_in_a_worker_keeps_each_delay_under_the_cap(app, db, worker):
    worker("-c", "1")
    r = taskapp.jittered.delay("jitter")
    with pytest.raises(OSError, match="jittered"):
        r.get(timeout=60)
    times = runs(db, "jitter")
    assert len(times) == 7  # the first run and max_retries=6
    gaps = gaps_between(times)
    assert max(gaps) < 1.5  # the 1 s cap, plus the worker's own latency
    # Without jitter every gap would be at least the 1 s cap; with it, six gaps all above
    # 0.8 s have a chance of 0.2**6.
    assert min(gaps) < 0.8, gaps


def test_retry_kwargs_set_how_often_and_how_soon_autoretry_retries(app, db, worker):
    worker("-c", "1")
    r = taskapp.auto_retry_kwargs.delay("rk", 10)
    # retry_kwargs max_retries=2, not the task's 5; countdown 0.1 s, not the default 180 s
    with pytest.raises(OSError, match="attempt 2"):
        r.get(timeout=30)
    assert len(runs(db, "rk")) == 3
    # a per-call max_retries wins over retry_kwargs; None means for ever
    forever = taskapp.auto_retry_kwargs.apply_async(("rk-forever", 4), max_retries=None)
    assert forever.get(timeout=30) == 4
    assert len(runs(db, "rk-forever")) == 5


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
    assert info["eta"] is None  # sent to run at once, as in Celery
    assert info["expires"]


def test_request_eta_is_when_a_delayed_call_was_due(app, worker):
    worker("-c", "1")
    before = dt.datetime.now(dt.timezone.utc)
    r = taskapp.request_info.apply_async(countdown=0.5)
    after = dt.datetime.now(dt.timezone.utc)
    eta = dt.datetime.fromisoformat(r.get(timeout=30)["eta"])
    assert before + dt.timedelta(seconds=0.4) < eta < after + dt.timedelta(seconds=0.6)


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


@pytest.mark.parametrize("source", ["command line", "global setting"])
def test_soft_time_limit_from_the_command_line_and_the_global_setting(
    app, worker, monkeypatch, source
):
    from pgqueue.exceptions import SoftTimeLimitExceeded

    if source == "command line":
        worker("-c", "1", "--soft-time-limit", "0.5")
    else:
        monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"task_soft_time_limit": 0.5}))
        worker("-c", "1")
    # sleep has no limit of its own: without the worker's it would outlast the timeout
    with pytest.raises(SoftTimeLimitExceeded):
        taskapp.sleep.delay(30).get(timeout=20)


def test_hard_time_limit_retries_follow_retry_kwargs(app, db, worker):
    from pgqueue.exceptions import TimeLimitExceeded

    worker("-c", "1")
    r = taskapp.hard_limited_retry_kwargs.delay("hard-rk")
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=60)
    # retry_kwargs max_retries=1, not the task's max_retries=2
    assert r.retries == 1
    assert len(runs(db, "hard-rk")) == 2


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_pools_without_hard_limits_say_so_at_start(app, worker, pool):
    w = worker("-P", pool, "--time-limit", "5")
    # logged after the worker registers, so waited for
    wait_for(
        lambda: "cannot enforce hard time limits (task_time_limit=5;" in w.output(),
        what="the start-up warning",
    )


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_pools_without_hard_limits_warn_once_of_a_per_call_time_limit(app, worker, pool):
    w = worker("-P", pool, "-c", "1")
    for _ in range(2):
        assert taskapp.sleep.apply_async((0.2,), time_limit=0.1).get(timeout=30) == 0.2
    assert w.output().count("per-call time_limit") == 1


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_pools_without_children_say_they_ignore_per_child_limits(app, worker, pool):
    w = worker("-P", pool, "--max-tasks-per-child", "2", "--max-memory-per-child", "100000")
    wait_for(
        lambda: (
            "--max-tasks-per-child=2 --max-memory-per-child=100000 only apply to -P prefork"
            in w.output()
        ),
        what="the start-up warning",
    )


def test_a_child_that_dies_fails_its_job_and_is_replaced(app, worker):
    from pgqueue.exceptions import WorkerLostError

    worker("-c", "1")
    with pytest.raises(WorkerLostError, match="exit code 3"):
        taskapp.crash_child.delay().get(timeout=30)
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2


def test_reject_on_worker_lost_runs_a_job_whose_child_was_killed_again(app, db, worker):
    worker("-c", "1")
    r = taskapp.killed_once.delay("oom")
    assert r.get(timeout=60) == 2
    assert r.retries == 1  # the killed run counts as an attempt
    assert len(runs(db, "oom")) == 2


def test_max_tasks_per_child_replaces_children(app, worker):
    w = worker("-c", "1", "--max-tasks-per-child", "2")
    pids = [taskapp.pid.delay().get(timeout=30) for _ in range(4)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
    # long after start-up: prefork does not warn that it ignores the option
    assert "only apply to -P prefork" not in w.output()


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


def test_revoked_job_a_worker_prefetched_never_runs(app, db, worker, monkeypatch):
    # Not held ahead for the child (worker_prefork_ahead): such a job counts as started,
    # which a revoke without terminate leaves alone (test_prefork_ahead.py).
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_prefork_ahead": 0}))
    w = worker("-c", "1")
    holder = taskapp.hold.delay("holder", "release-holder")
    wait_for(lambda: runs(db, "holder"), what="the first job to start")
    prefetched = taskapp.record.delay("prefetched")

    def claimed_not_started() -> bool:
        row = db.execute(
            "SELECT worker_id IS NOT NULL AND state = 'PENDING' FROM pgqueue.jobs WHERE id = %s",
            (prefetched.id,),
        ).fetchone()
        return row == (True,)

    # its one slot busy, the worker still claims ahead (prefetch) into its buffer
    wait_for(claimed_not_started, what="the worker to prefetch the second job")
    assert prefetched.revoke() is True
    wait_for(
        lambda: f"job {prefetched.id} revoked before it started" in w.output(),
        what="the worker to drop it from its buffer",
    )
    after = taskapp.record.delay("after")
    db.execute("INSERT INTO test_runs (tag) VALUES ('release-holder')")
    assert holder.get(timeout=30) == "released"
    after.get(timeout=30)  # queued after it: the worker is past the revoked job
    assert runs(db, "prefetched") == []
    assert prefetched.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        prefetched.get(timeout=5)


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


def test_sigkilled_worker_loses_no_job(app, db, worker, monkeypatch):
    # A heartbeat lease far longer than the wait below: only the liveness lock, gone with
    # the dead worker's connection, can have the job rescued in time.
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_lost_timeout": 600}))
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("crash", 1)
    # the task's own record, not the STARTED state: a job handed to an idle worker is
    # STARTED as the enqueue commits, a moment before its task runs
    wait_for(lambda: runs(db, "crash"), what="the task to start on worker A")
    a.signal(signal.SIGKILL)
    a.proc.wait(30)
    b = worker("-c", "1")
    result = r.get(timeout=60)
    assert result["ppid"] == b.pid
    assert r.retries == 1  # the lost run counts as an attempt
    assert len(runs(db, "crash")) == 2


def test_terminated_backend_is_detected_and_worker_recovers(app, db, worker):
    count_result_writes(db)
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("cut", 2)
    wait_for(lambda: runs(db, "cut"), what="the task to start")
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name LIKE 'pgqueue %%' AND datname = current_database()"
    )
    assert r.get(timeout=60)["ppid"] == a.pid
    assert r.retries in (0, 1)  # rescued and rerun by A itself, or finished and written once
    assert len(runs(db, "cut")) == r.retries + 1  # every run is counted as an attempt
    assert result_writes(db, r.id) == 1
    assert taskapp.add.delay(3, 3).get(timeout=30) == 6
    log = a.output()
    assert log.count("database connection lost") == 1, log
    assert "database connection restored" in log


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
    wait_for(lambda: runs(db, "busy"), what="the task to start")

    before = cpu_seconds(a.pid)
    wait_for(lambda: r.ready(), timeout=60, what="the slow task to finish")
    # A spinning loop burns a whole core for the ~6 s the task runs; a sleeping one
    # wakes every 0.2 s for a fallback poll.
    assert cpu_seconds(a.pid) - before < 2.0
    assert r.get(timeout=5)["ppid"] == a.pid


def test_prefork_sleeps_while_a_task_goes_on_after_its_soft_limit(app, worker):
    a = worker("-c", "1")
    r = taskapp.soft_then_linger.delay(5)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    before = cpu_seconds(a.pid)
    assert r.get(timeout=60) == "lingered"
    assert cpu_seconds(a.pid) - before < 2.0


def test_revived_worker_cannot_overwrite_the_result_fencing(app, db, worker):
    count_result_writes(db)
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("fence", 3)
    wait_for(lambda: runs(db, "fence"), what="the task to start on A")
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
    assert result_writes(db, r.id) == 1  # B's write only, not overwritten by A
    (written_by,) = db.execute(
        "SELECT worker FROM pgqueue.results WHERE task_id = %s", (r.id,)
    ).fetchone()
    assert written_by.endswith(f":{b.pid}")


def test_at_most_once_job_lost_with_its_worker_fails_with_worker_lost(app, db, worker):
    from pgqueue.exceptions import WorkerLostError

    a = worker("-c", "1")
    r = taskapp.at_most_once.delay("amo", 30)
    wait_for(lambda: r.state == states.STARTED, what="STARTED")
    # STARTED is committed just before the task body runs: wait for the body itself
    wait_for(lambda: runs(db, "amo"), what="the task to run")
    a.signal(signal.SIGKILL)
    a.proc.wait(30)
    worker("-c", "1")
    with pytest.raises(WorkerLostError):
        r.get(timeout=60)
    assert len(runs(db, "amo")) == 1


@pytest.mark.parametrize("acks_late", [False, True])
def test_acks_late_per_call_overrides_the_task_when_its_worker_is_lost(app, db, worker, acks_late):
    from pgqueue.exceptions import WorkerLostError

    # The opposite of each task's own setting: slow_record is at-least-once, at_most_once not.
    task = taskapp.slow_record if not acks_late else taskapp.at_most_once
    tag = f"acks-{acks_late}"
    a = worker("-c", "1")
    r = task.apply_async((tag, 30), acks_late=acks_late)
    wait_for(lambda: runs(db, tag), what="the task to run")
    a.signal(signal.SIGKILL)
    a.proc.wait(30)
    if acks_late:
        db.execute("UPDATE test_runs SET tag = 'done' WHERE tag = %s", (tag,))
        worker("-c", "1")
        wait_for(lambda: len(runs(db, tag)) == 1, timeout=60, what="the job to run again")
        app.control.revoke(r.id, terminate=True)
    else:
        worker("-c", "1")
        with pytest.raises(WorkerLostError):
            r.get(timeout=60)
        assert len(runs(db, tag)) == 1


def test_stale_heartbeat_counts_as_lost(app, db, worker, monkeypatch):
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_lost_timeout": 3}))
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("stale", 2)
    wait_for(lambda: runs(db, "stale"), what="the task to start on A")
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


def test_result_expires_none_keeps_results(app, db, worker, monkeypatch):
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF", json.dumps({"result_expires": None, "result_cleanup_interval": 0.2})
    )
    worker("-c", "1")
    r = taskapp.add.delay(1, 2)
    assert r.get(timeout=30) == 3
    expires_at = db.execute("SELECT expires_at FROM pgqueue.results WHERE task_id = %s", (r.id,))
    assert expires_at.fetchone() == (None,)
    # An expired result put in afterwards: once it is gone, the cleanup has run since ours
    # was written, and ours must still be there.
    db.execute(
        "INSERT INTO pgqueue.results (task_id, task_name, queue, state, expires_at)"
        " VALUES (gen_random_uuid(), 'expired.canary', 'default', 'SUCCESS',"
        "         now() - interval '1 second')"
    )
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pgqueue.results WHERE task_name = 'expired.canary'"
            ).fetchone()[0]
            == 0
        ),
        what="the cleanup to run",
    )
    assert app.AsyncResult(r.id).get(timeout=5) == 3


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
    # threads: what is measured is the table, and a no-op drain is quickest this way
    worker("-P", "threads", "-c", "32", "--loglevel", "WARNING")
    wait_for(
        lambda: db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] == 1,
        timeout=240,
        what="100,000 jobs to run",
    )
    assert db.execute("SELECT id::text FROM pgqueue.jobs").fetchone()[0] == future.id
    # with 100,000 future jobs queued, and 1,000 held by a worker, the claim still walks
    # the index
    db.execute(
        "INSERT INTO pgqueue.jobs (id, task_name, run_at, worker_id)"
        " SELECT gen_random_uuid(), 'tests.taskapp.add', now() + interval '1 day',"
        "        CASE WHEN g %% 100 = 0 THEN %s::uuid END"
        " FROM generate_series(1, 100000) AS g",
        (CLAIM_PARAMS["worker_id"],),
    )
    db.execute("ANALYZE pgqueue.jobs")
    plan = generic_plan(db, "claim_jobs", CLAIM_PARAMS)
    # Workers plan the claim once (claim_settings): that one plan must walk the index and
    # fetch the candidates by their TIDs, whatever it guesses LIMIT $n to be (joined on
    # ctid alone, a million jobs made it hash the whole table).
    # (The candidates' TIDs as one array, or one TID per candidate in a nested loop: the
    # planner picks either since queue_levels reads pgqueue.queues; both fetch exactly the
    # candidates. pgqueue.queues, a row per paused or limited queue, may be read whole.)
    assert "jobs_claim_idx" in plan, plan
    assert re.search(r"TID Cond: \(ctid = (ANY|next\.ctid)", plan), plan
    assert not re.search(r"Seq Scan on jobs\b", plan), plan
    # Starting buffered jobs looks them up by id, not by reading all the worker holds.
    plan = generic_plan(
        db,
        "mark_started",
        {"jobs": json.dumps([[future.id, 1, True]]), "worker_id": CLAIM_PARAMS["worker_id"],
         "synchronous_commit": "on"},
    )  # fmt: skip
    assert "Index Cond: (id = ANY" in plan, plan
    assert "Seq Scan" not in plan, plan


CLAIM_PARAMS = {
    "queues": ["default"],
    "tasks": ["tests.taskapp.add", "tests.taskapp.at_most_once"],
    "limit": 10,
    "start": 5,
    "at_most_once": ["tests.taskapp.at_most_once"],
    "worker_id": "00000000-0000-0000-0000-000000000000",
    "synchronous_commit": "on",
}


def generic_plan(db, name, params):
    """EXPLAIN of query ``name``'s generic plan: the one a worker's connection caches."""
    import re

    from pgqueue import queries

    order: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in order:
            order.append(m.group(1))
        return f"${order.index(m.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)s", number, queries.get(name))
    with db.transaction():
        db.execute(queries.get("claim_settings"), {"synchronous_commit": "on"})
        db.execute(f"PREPARE generic_{name} AS {text}")
        try:
            args = ", ".join(db.execute("SELECT quote_nullable(%s)", (params[k],)).fetchone()[0]
                             for k in order)  # fmt: skip
            rows = db.execute(f"EXPLAIN EXECUTE generic_{name}({args})").fetchall()
        finally:
            db.execute(f"DEALLOCATE generic_{name}")
    return "\n".join(r[0] for r in rows)


def register_worker_row(db, tasks):
    """A workers row for statements run by hand as that worker; its id."""
    worker_id = "00000000-0000-0000-0000-000000000001"
    db.execute(
        "INSERT INTO pgqueue.workers (id, name, hostname, pid, queues, tasks, pool, concurrency)"
        " VALUES (%s, 'w', 'h', 1, '{default}', %s, 'solo', 1)",
        (worker_id, tasks),
    )
    return worker_id


@pytest.mark.parametrize("acks_late", [True, False])
def test_a_claim_waits_for_the_wal_flush_only_when_it_starts_an_at_most_once_job(
    app, db, acks_late
):
    """A lost claim only makes its jobs run again: fine for at-least-once jobs, so their
    claim commits without waiting for the flush; an at-most-once job must not start before
    its claim is durable."""
    from pgqueue import queries

    task = taskapp.slow_record if acks_late else taskapp.at_most_once
    task.delay("sync", 0)
    worker_id = register_worker_row(db, [task.name])
    params = {**CLAIM_PARAMS, "tasks": [task.name], "worker_id": worker_id, "start": 1}
    with db.transaction():
        db.execute(queries.get("claim_settings"), {"synchronous_commit": "on"})
        (document, _) = db.execute(queries.get("claim_jobs"), params).fetchone()
        setting = db.execute("SHOW synchronous_commit").fetchone()[0]
    (job,) = json.loads(document)
    assert job[-1] is True  # started at once
    assert setting == ("off" if acks_late else "on")


@pytest.mark.parametrize("acks_late", [True, False])
def test_marking_started_waits_for_the_wal_flush_only_for_an_at_most_once_job(app, db, acks_late):
    from pgqueue import queries

    r = taskapp.slow_record.delay("sync", 0)
    worker_id = register_worker_row(db, [])
    db.execute(
        "UPDATE pgqueue.jobs SET worker_id = %s, attempt = 1 WHERE id = %s", (worker_id, r.id)
    )
    with db.transaction():
        db.execute(queries.get("claim_settings"), {"synchronous_commit": "on"})
        rows = db.execute(
            queries.get("mark_started"),
            {
                "jobs": json.dumps([[r.id, 1, acks_late]]),
                "worker_id": worker_id,
                "synchronous_commit": "on",
            },
        ).fetchall()
        setting = db.execute("SHOW synchronous_commit").fetchone()[0]
    assert [(row[0], row[1]) for row in rows] == [(r.id, True)]
    assert setting == ("off" if acks_late else "on")


def test_workers_vacuum_the_jobs_table_where_autovacuum_is_off(app, db):
    from pgqueue.maintenance import Vacuumer

    if db.execute("SELECT current_setting('autovacuum')").fetchone()[0] != "off":
        pytest.skip("autovacuum is on here: workers leave vacuuming to it")
    app.enqueue_many([taskapp.add.s(i, i) for i in range(100)])
    db.execute("DELETE FROM pgqueue.jobs")
    with app.connect() as conn:
        Vacuumer().work(conn)
    vacuumed = db.execute(
        "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables"
        " WHERE relid = 'pgqueue.jobs'::regclass"
    ).fetchone()[0]
    assert vacuumed is True
