"""Operations: the SQL views, the library behind the CLI, and the CLI commands, against a real
database whose queue state each test builds by inserting rows (or enqueueing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgqueue import ops
from pgqueue.cli import main as cli_main
from pgqueue.worker import WORKER_LOCK_CLASS
from tests import taskapp
from tests.conftest import ROOT, dsn_of, wait_for

# -- building a queue state ---------------------------------------------------------------


def add_worker(
    db: psycopg.Connection[Any],
    name: str,
    queues: list[str],
    tasks: list[str],
    *,
    locked: bool = True,
    heartbeat_age: float = 0.0,
) -> str:
    """A registered worker; ``locked``: its liveness lock is held (by the db connection)."""
    worker_id = str(uuid.uuid4())
    (lock_key,) = db.execute(
        "INSERT INTO pgqueue.workers (id, name, hostname, pid, queues, tasks, pool, concurrency,"
        " heartbeat_at, jobs_done)"
        " VALUES (%s, %s, %s, 4242, %s, %s, 'threads', 2,"
        "         now() - make_interval(secs => %s), 7)"
        " RETURNING lock_key",
        (worker_id, name, f"host-{name}", queues, tasks, heartbeat_age),
    ).fetchone()
    if locked:
        db.execute("SELECT pg_advisory_lock(%s, %s)", (WORKER_LOCK_CLASS, lock_key))
    return worker_id


def add_job(
    db: psycopg.Connection[Any],
    task: str,
    queue: str = "default",
    *,
    run_in: float = -1.0,
    state: str = "PENDING",
    worker_id: str | None = None,
    args: list[Any] | None = None,
) -> str:
    """A live job due ``run_in`` seconds from now; with ``worker_id`` claimed (and started
    when ``state`` is STARTED, ``-run_in`` seconds ago)."""
    job_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO pgqueue.jobs (id, task_name, queue, args, state, run_at, worker_id,"
        " claimed_at, started_at, attempt)"
        " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s,"
        "         CASE WHEN %s::uuid IS NOT NULL THEN now() END,"
        "         CASE WHEN %s = 'STARTED' THEN now() + make_interval(secs => %s) END,"
        "         CASE WHEN %s::uuid IS NOT NULL THEN 1 ELSE 0 END)",
        (
            job_id,
            task,
            queue,
            json.dumps(args or []),
            state,
            run_in,
            worker_id,
            worker_id,
            state,
            run_in,
            worker_id,
        ),
    )
    return job_id


def add_result(
    db: psycopg.Connection[Any],
    task: str,
    queue: str = "default",
    state: str = "SUCCESS",
    *,
    age: float = 1.0,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    result: Any = None,
) -> str:
    """A finished job, done ``age`` seconds ago; failures carry an error and a traceback."""
    job_id = str(uuid.uuid4())
    failed = state == "FAILURE"
    db.execute(
        "INSERT INTO pgqueue.results (task_id, task_name, queue, state, result, exc_type,"
        " exc_message, traceback, args, kwargs, worker, date_done, time_taken)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'w1',"
        "         now() - make_interval(secs => %s), 0.5)",
        (
            job_id,
            task,
            queue,
            state,
            json.dumps(result) if state == "SUCCESS" else None,
            "ValueError"
            if failed
            else ("pgqueue.exceptions.TaskRevokedError" if state == "REVOKED" else None),
            f"{task} broke" if failed else ("revoked" if state == "REVOKED" else None),
            f'Traceback (most recent call last):\n  File "t.py"\nValueError: {task} broke\n'
            if failed
            else None,
            None if state == "SUCCESS" else json.dumps(args or []),
            None if state == "SUCCESS" else json.dumps(kwargs or {}),
            age,
        ),
    )
    return job_id


def count(db: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    return int(db.execute(sql, params).fetchone()[0])


def cli(dsn: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli_main, ["--dsn", dsn, *args], input=input)


# -- views --------------------------------------------------------------------------------


@pytest.fixture
def constructed(db: psycopg.Connection[Any]) -> dict[str, Any]:
    """A queue state with one job or result in every bucket the views count.

    q1: 3 ready (one a due RETRY, the oldest due 600 s ago), 2 scheduled, 1 retrying, 1
        reserved, 2 running (on the live worker w-live); 1 ready job of t.other, a task only a
        dead worker registered; results: 2 failures and 4 successes in the last hour, 1 failure
        two hours ago, 1 revoked.
    q2: no jobs; consumed by the live worker.
    q3: 2 jobs of a task nobody registered, 1 of t.known.
    """
    live = add_worker(db, "w-live", ["q1", "q2", "q3"], ["t.known"])
    add_worker(db, "w-dead", ["q1"], ["t.other"], locked=False)
    add_worker(db, "w-stale", ["q1"], ["t.other"], heartbeat_age=3600)
    add_job(db, "t.known", "q1", run_in=-600)
    add_job(db, "t.known", "q1", run_in=-5)
    add_job(db, "t.known", "q1", run_in=-5, state="RETRY")
    add_job(db, "t.known", "q1", run_in=3600)
    add_job(db, "t.known", "q1", run_in=7200)
    add_job(db, "t.known", "q1", run_in=60, state="RETRY")
    add_job(db, "t.known", "q1", state="PENDING", worker_id=live)
    running = [
        add_job(db, "t.known", "q1", run_in=-30, state="STARTED", worker_id=live),
        add_job(db, "t.known", "q1", run_in=-10, state="STARTED", worker_id=live),
    ]
    add_job(db, "t.other", "q1", run_in=-1)
    add_job(db, "nobody.has.it", "q3")
    add_job(db, "nobody.has.it", "q3", run_in=100)
    add_job(db, "t.known", "q3")
    failures = [add_result(db, "t.known", "q1", "FAILURE", age=age) for age in (60, 120)]
    old_failure = add_result(db, "t.known", "q1", "FAILURE", age=7200)
    for _ in range(4):
        add_result(db, "t.known", "q1", "SUCCESS", age=30)
    add_result(db, "t.known", "q1", "REVOKED", age=30)
    add_result(db, "t.known", "q1", "SUCCESS", age=5400)
    return {"live": live, "running": running, "failures": failures, "old_failure": old_failure}


def test_queue_stats_counts_every_bucket_of_a_constructed_queue(db, constructed):
    stats = {s.queue: s for s in ops.queue_stats(db)}
    assert sorted(stats) == ["q1", "q2", "q3"]
    q1 = stats["q1"]
    assert (q1.ready, q1.scheduled, q1.retrying, q1.reserved, q1.running) == (4, 2, 1, 1, 2)
    assert (q1.failed_last_hour, q1.succeeded_last_hour) == (2, 4)
    # only the dead and the stale worker registered t.other
    assert q1.unregistered == 1
    assert q1.workers == 1
    assert q1.lag is not None and 600 <= q1.lag < 660
    q2 = stats["q2"]
    assert (q2.ready, q2.scheduled, q2.running, q2.unregistered, q2.workers) == (0, 0, 0, 0, 1)
    assert q2.lag is None
    q3 = stats["q3"]
    assert (q3.ready, q3.scheduled, q3.unregistered) == (2, 1, 2)


def test_queue_stats_view_is_plain_sql(db, constructed):
    row = db.execute(
        "SELECT ready, lag > interval '10 minutes' FROM pgqueue.queue_stats WHERE queue = 'q1'"
    ).fetchone()
    assert row == (4, True)


def test_running_view_lists_started_jobs_with_their_worker(db, constructed):
    rows = db.execute(
        "SELECT id, worker, hostname, pid, started_at IS NOT NULL,"
        " extract(epoch FROM runtime) FROM pgqueue.running"
    ).fetchall()
    assert [str(r[0]) for r in rows] == constructed["running"]  # longest-running first
    assert {(r[1], r[2], r[3], r[4]) for r in rows} == {("w-live", "host-w-live", 4242, True)}
    assert 30 <= rows[0][5] < 90 and 10 <= rows[1][5] < 70


def test_worker_status_tells_live_from_dead_workers(db, constructed):
    workers = {w.name: w for w in ops.worker_status(db)}
    assert {n: w.alive for n, w in workers.items()} == {
        "w-live": True,
        "w-dead": False,  # its lock is not held: its connection is gone
        "w-stale": False,  # lock held, heartbeat an hour old
    }
    live = workers["w-live"]
    assert (live.hostname, live.pid, live.queues, live.concurrency) == (
        "host-w-live",
        4242,
        ["q1", "q2", "q3"],
        2,
    )
    assert (live.running, live.jobs_done) == (2, 7)


def test_worker_lost_timeout_setting_moves_the_heartbeat_limit(db, constructed):
    db.execute("SET pgqueue.worker_lost_timeout = '7200'")
    assert {w.name: w.alive for w in ops.worker_status(db)}["w-stale"] is True


def test_failures_view_lists_kept_failures_newest_first(db, constructed):
    rows = db.execute(
        "SELECT task_id, exc_type, exc_message, queue FROM pgqueue.failures"
    ).fetchall()
    assert [str(r[0]) for r in rows] == [*constructed["failures"], constructed["old_failure"]]
    assert {(r[1], r[2], r[3]) for r in rows} == {("ValueError", "t.known broke", "q1")}


def plan_of(db: psycopg.Connection[Any], sql: str) -> str:
    return "\n".join(r[0] for r in db.execute(f"EXPLAIN {sql}").fetchall())


def test_views_read_indexes_not_history(db):
    """With a long history of results and a large queue, the views read index ranges: the
    last hour of results, the newest failures, the claimed jobs."""
    db.execute(
        "INSERT INTO pgqueue.results (task_id, task_name, queue, state, date_done)"
        " SELECT gen_random_uuid(), 't', 'q', CASE WHEN i % 10 = 0 THEN 'FAILURE'"
        " ELSE 'SUCCESS' END, now() - make_interval(hours => 2 + i % 48)"
        " FROM generate_series(1, 60000) AS i"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (id, task_name, queue)"
        " SELECT gen_random_uuid(), 't', 'q' FROM generate_series(1, 60000)"
    )
    db.execute("ANALYZE pgqueue.results")
    db.execute("ANALYZE pgqueue.jobs")
    stats_plan = plan_of(db, "SELECT * FROM pgqueue.queue_stats")
    assert "results_state_done_idx on results" in stats_plan
    assert "Seq Scan on results" not in stats_plan
    failures_plan = plan_of(db, "SELECT * FROM pgqueue.failures LIMIT 20")
    assert "Index Scan Backward using results_state_done_idx" in failures_plan
    running_plan = plan_of(db, "SELECT * FROM pgqueue.running")
    assert "jobs_worker_idx on jobs" in running_plan
    assert "Seq Scan on jobs" not in running_plan
    assert "Seq Scan on jobs" not in plan_of(db, "SELECT * FROM pgqueue.worker_status")


# -- CLI: reading ---------------------------------------------------------------------------


def test_status_prints_a_table_and_json(dsn, db, constructed):
    table = cli(dsn, "status")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == [
        "QUEUE",
        "READY",
        "SCHEDULED",
        "RETRYING",
        "RESERVED",
        "RUNNING",
    ]
    q1 = next(line.split() for line in lines if line.startswith("q1 "))
    assert q1[1:8] == ["4", "2", "1", "1", "2", "2", "4"]
    as_json = cli(dsn, "status", "--json")
    assert as_json.exit_code == 0
    by_queue = {row["queue"]: row for row in json.loads(as_json.stdout)}
    assert by_queue["q3"]["unregistered"] == 2
    assert by_queue["q1"]["lag"] >= 600


def test_status_of_an_empty_database(dsn):
    result = cli(dsn, "status")
    assert result.exit_code == 0
    assert "no queues" in result.stdout
    assert json.loads(cli(dsn, "status", "--json").stdout) == []


def _watch(dsn: str, sink: Any, *extra: str, stderr: int) -> subprocess.Popen[bytes]:
    """``pgqueue status --watch`` refreshing every 0.2 s, writing to ``sink``."""
    command = ["pgqueue.cli", "--dsn", dsn, "status", "--watch", "-n", "0.2", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=sink,
        stderr=stderr,
    )


def test_status_watch_refreshes_until_interrupted(dsn, db, tmp_path: Path):
    add_job(db, "t.known", "watched")
    out = tmp_path / "watch.out"
    with out.open("w") as sink:
        proc = _watch(dsn, sink, stderr=subprocess.STDOUT)
        try:

            def refreshes() -> int:
                return out.read_text().count("pgqueue status")

            wait_for(lambda: refreshes() >= 1, 30, "the first frame")
            add_job(db, "t.known", "watched")  # the next frames show it
            wait_for(lambda: "watched  2 " in out.read_text(), 30, "a frame with 2 ready")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = out.read_text()
    assert "watched  1 " in text
    assert "Traceback" not in text


def test_status_watch_json_writes_one_line_per_refresh(dsn, db, tmp_path: Path):
    add_job(db, "t.known", "watched")
    out = tmp_path / "watch.jsonl"
    with out.open("w") as sink:
        proc = _watch(dsn, sink, "--json", stderr=subprocess.DEVNULL)
        try:

            def frames() -> list[Any]:
                lines = out.read_text().splitlines()
                return [json.loads(line) for line in lines[:-1]]  # the last may be partial

            wait_for(lambda: len(frames()) >= 1, 30, "the first line")
            add_job(db, "t.known", "watched")

            def ready_counts() -> list[int]:
                return [q["ready"] for f in frames() for q in f if q["queue"] == "watched"]

            wait_for(lambda: 2 in ready_counts(), 30, "a line with 2 ready")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert ready_counts()[0] == 1


def test_jobs_lists_and_filters(dsn, db, app):
    taskapp.add.apply_async((1, 2), queue="qa")
    taskapp.add.apply_async((3, 4), queue="qb")
    taskapp.send_email.delay("a@b.c")
    add_result(db, "tests.taskapp.fail", "qa", "FAILURE", args=["x"])
    add_result(db, "tests.taskapp.add", "qa", "SUCCESS", result=3)

    def ids(*args: str) -> list[tuple[str, str, str]]:
        result = cli(dsn, "jobs", "--json", *args)
        assert result.exit_code == 0, result.output
        return [(j["task_name"], j["queue"], j["state"]) for j in json.loads(result.stdout)]

    assert sorted(ids()) == [
        ("emails.send", "emails", "PENDING"),
        ("tests.taskapp.add", "qa", "PENDING"),
        ("tests.taskapp.add", "qb", "PENDING"),
    ]
    assert ids("--queue", "qb") == [("tests.taskapp.add", "qb", "PENDING")]
    assert ids("--task", "emails.send") == [("emails.send", "emails", "PENDING")]
    assert ids("-s", "failure") == [("tests.taskapp.fail", "qa", "FAILURE")]
    assert sorted(ids("-s", "FAILURE", "-s", "SUCCESS", "-Q", "qa")) == [
        ("tests.taskapp.add", "qa", "SUCCESS"),
        ("tests.taskapp.fail", "qa", "FAILURE"),
    ]
    assert len(ids("--limit", "2")) == 2
    table = cli(dsn, "jobs", "-s", "FAILURE")
    assert table.exit_code == 0
    assert "ValueError: tests.taskapp.fail broke" in table.stdout
    assert cli(dsn, "jobs", "-Q", "nowhere").stdout.strip() == "no jobs"
    assert cli(dsn, "jobs", "-s", "BOGUS").exit_code == 2


def test_inspect_shows_a_job_and_a_failure_with_its_traceback(dsn, db, app):
    queued = taskapp.add.apply_async((2, 3), countdown=600, priority=4)
    shown = cli(dsn, "inspect", queued.id)
    assert shown.exit_code == 0, shown.output
    assert "tests.taskapp.add" in shown.stdout
    assert "[2, 3]" in shown.stdout
    as_json = json.loads(cli(dsn, "inspect", queued.id, "--json").stdout)
    assert (as_json["source"], as_json["state"], as_json["priority"]) == ("jobs", "PENDING", 4)
    assert as_json["args"] == [2, 3]

    failed = add_result(db, "tests.taskapp.fail", "default", "FAILURE", args=["boom"])
    shown = cli(dsn, "inspect", failed)
    assert shown.exit_code == 0
    assert "traceback:" in shown.stdout
    assert "ValueError: tests.taskapp.fail broke" in shown.stdout.split("traceback:")[1]
    as_json = json.loads(cli(dsn, "inspect", failed, "--json").stdout)
    assert (as_json["source"], as_json["state"], as_json["args"]) == (
        "results",
        "FAILURE",
        ["boom"],
    )
    assert as_json["traceback"].startswith("Traceback")

    missing = cli(dsn, "inspect", str(uuid.uuid4()))
    assert missing.exit_code == 3
    assert "no job or result" in missing.stderr
    assert cli(dsn, "inspect", "not-a-uuid").exit_code == 2


def test_result_prints_the_value_and_exits_by_state(dsn, db, app):
    ok = add_result(db, "tests.taskapp.add", state="SUCCESS", result={"sum": 5})
    done = cli(dsn, "result", ok)
    assert done.exit_code == 0
    assert json.loads(done.stdout) == {"sum": 5}

    failed = add_result(db, "tests.taskapp.fail", state="FAILURE", args=["x"])
    bad = cli(dsn, "result", failed)
    assert bad.exit_code == 5
    assert "FAILURE: ValueError: tests.taskapp.fail broke" in bad.stderr
    assert "Traceback" in bad.stderr
    assert bad.stdout == ""
    as_json = cli(dsn, "result", failed, "--json")
    assert as_json.exit_code == 5
    assert json.loads(as_json.stdout)["exc_type"] == "ValueError"

    revoked = add_result(db, "tests.taskapp.add", state="REVOKED")
    assert cli(dsn, "result", revoked).exit_code == 5

    waiting = taskapp.add.delay(1, 1)
    pending = cli(dsn, "result", waiting.id)
    assert pending.exit_code == 4
    assert "is PENDING" in pending.stderr
    assert cli(dsn, "result", str(uuid.uuid4())).exit_code == 3


def test_result_timeout_waits_for_a_worker(dsn, app, worker):
    queued = taskapp.add.delay(20, 22)
    worker("-c", "1", "-P", "threads")
    done = cli(dsn, "result", queued.id, "--timeout", "60")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "42"


def test_workers_lists_workers(dsn, db, constructed):
    table = cli(dsn, "workers")
    assert table.exit_code == 0
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows["w-live"][-1] == "yes"
    assert rows["w-dead"][-1] == "NO"
    listed = json.loads(cli(dsn, "workers", "--json").stdout)
    assert {w["name"]: w["alive"] for w in listed} == {
        "w-live": True,
        "w-dead": False,
        "w-stale": False,
    }
    assert next(w for w in listed if w["name"] == "w-live")["queues"] == ["q1", "q2", "q3"]


def test_commands_without_the_schema_say_to_migrate(bare_postgresql):
    dsn = dsn_of(bare_postgresql)
    for command in (["status"], ["jobs"], ["workers"], ["purge", "--yes"]):
        result = cli(dsn, *command)
        assert result.exit_code == 1, (command, result.output)
        assert "pgqueue migrate" in result.output
        assert "Traceback" not in result.output


# -- purge ----------------------------------------------------------------------------------


def test_purge_asks_then_deletes_only_what_it_names(dsn, db):
    live = add_worker(db, "w", ["q1"], ["a"])
    named = [add_job(db, "a", "q1") for _ in range(3)] + [add_job(db, "a", "q1", state="RETRY")]
    named.append(add_job(db, "a", "q1", run_in=3600))  # scheduled jobs are queued jobs too
    kept = [
        add_job(db, "b", "q1"),
        add_job(db, "a", "q2"),
        add_job(db, "a", "q1", state="STARTED", worker_id=live),
        add_job(db, "a", "q1", worker_id=live),  # claimed, not started yet
    ]

    declined = cli(dsn, "purge", "-Q", "q1", "--task", "a", input="n\n")
    assert declined.exit_code == 1
    assert "Delete 5 queued job(s) of a in q1" in declined.output
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 9

    accepted = cli(dsn, "purge", "-Q", "q1", "--task", "a", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "purged 5 job(s)" in accepted.stdout
    left = {str(r[0]) for r in db.execute("SELECT id FROM pgqueue.jobs")}
    assert left == set(kept)

    nothing = cli(dsn, "purge", "-Q", "q2", "--state", "RETRY", "--yes")
    assert nothing.exit_code == 0
    assert "nothing to purge" in nothing.stdout
    assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE queue = 'q2'") == 1


def test_purge_never_takes_running_jobs(dsn, db):
    refused = cli(dsn, "purge", "--state", "STARTED", "--yes")
    assert refused.exit_code == 1
    assert "never purged" in refused.output
    with pytest.raises(ops.OpsError):
        ops.JobFilter(states=("STARTED",))


def test_purge_runs_in_batches_with_progress(dsn, db):
    for _ in range(10):
        add_job(db, "a", "bulk")
    add_job(db, "a", "other")
    batches: list[int] = []
    purged = ops.purge(db, ops.JobFilter(queues=("bulk",)), batch_size=3, progress=batches.append)
    assert purged == 10
    assert batches == [3, 3, 3, 1]
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 1

    for _ in range(4):
        add_job(db, "a", "bulk")
    result = cli(dsn, "purge", "-Q", "bulk,nowhere", "--yes", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"purged": 4}
    assert "purged: 4/4" in result.stderr


# -- retry ----------------------------------------------------------------------------------


def test_retry_failed_requeues_only_matching_failures(dsn, db, app):
    recent = [
        add_result(db, "tests.taskapp.add", "q1", "FAILURE", age=60, args=[i, 1], kwargs={})
        for i in range(2)
    ]
    old = add_result(db, "tests.taskapp.add", "q1", "FAILURE", age=3 * 3600, args=[9, 9])
    other_queue = add_result(db, "tests.taskapp.add", "q2", "FAILURE", age=60, args=[5, 5])
    revoked = add_result(db, "tests.taskapp.add", "q1", "REVOKED", age=60)
    succeeded = add_result(db, "tests.taskapp.add", "q1", "SUCCESS", age=60, result=2)

    result = cli(dsn, "retry", "--failed", "--queue", "q1", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert "requeued 2 job(s)" in result.stdout
    jobs = db.execute(
        "SELECT id, task_name, queue, args, kwargs, state, retries FROM pgqueue.jobs ORDER BY args"
    ).fetchall()
    assert [(str(j[0]), j[1], j[2], j[3], j[4], j[5], j[6]) for j in jobs] == [
        (recent[0], "tests.taskapp.add", "q1", [0, 1], {}, "PENDING", 0),
        (recent[1], "tests.taskapp.add", "q1", [1, 1], {}, "PENDING", 0),
    ]
    left = {str(r[0]) for r in db.execute("SELECT task_id FROM pgqueue.results")}
    assert left == {old, other_queue, revoked, succeeded}
    assert app.AsyncResult(recent[0]).state == "PENDING"

    everything = cli(dsn, "retry", "--failed", "--json")
    assert everything.exit_code == 0
    assert json.loads(everything.stdout) == {"retried": 2}
    left = {str(r[0]) for r in db.execute("SELECT task_id FROM pgqueue.results")}
    assert left == {revoked, succeeded}

    assert cli(dsn, "retry", "--failed").stdout.strip() == "nothing to retry"
    assert cli(dsn, "retry").exit_code == 2
    assert cli(dsn, "retry", "--failed", "--since", "yesterday-ish").exit_code == 2


def test_bulk_retry_runs_in_batches_with_progress(dsn, db):
    for i in range(7):
        add_result(db, "t", "q", "FAILURE", age=60, args=[i])
    batches: list[int] = []
    plan = ops.plan_retry(db, ops.ResultFilter())
    assert ops.retry_results(db, plan, batch_size=3, progress=batches.append) == 7
    assert batches == [3, 3, 1]
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 7

    for i in range(2):
        add_result(db, "t", "q", "FAILURE", age=60, args=[i])
    result = cli(dsn, "retry", "--failed", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"retried": 2}
    assert "2/2" in result.stderr  # the running count, on stderr


def test_retry_by_id_reports_what_it_could_not_retry(dsn, db):
    failed = add_result(db, "t", "q", "FAILURE", args=[1])
    succeeded = add_result(db, "t", "q", "SUCCESS", result=1)
    revoked = add_result(db, "t", "q", "REVOKED", args=[2])
    queued = add_job(db, "t", "q")
    unknown = str(uuid.uuid4())

    result = cli(dsn, "retry", failed, succeeded, revoked, queued, unknown)
    assert result.exit_code == 3
    assert result.stdout.strip() == f"retried {failed}"
    assert f"not retried {succeeded}: is SUCCESS" in result.stderr
    assert f"not retried {revoked}: is REVOKED: pass --revoked" in result.stderr
    assert f"not retried {queued}: is PENDING, not finished" in result.stderr
    assert f"not retried {unknown}: no such job" in result.stderr

    again = cli(dsn, "retry", revoked, "--revoked", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"retried": [revoked], "skipped": {}}
    assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = %s", revoked) == 1


def test_bulk_retry_does_not_take_failures_written_after_it_began(db):
    first = add_result(db, "t", "q", "FAILURE", age=10, args=[1])
    plan = ops.plan_retry(db, ops.ResultFilter())
    assert plan.count == 1
    # as if the requeued job failed again while the retry was still going
    later = add_result(db, "t", "q", "FAILURE", age=-5, args=[2])
    assert ops.retry_results(db, plan, batch_size=1) == 1
    assert {str(r[0]) for r in db.execute("SELECT task_id FROM pgqueue.results")} == {later}
    assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = %s", first) == 1


def test_retried_job_runs_again_under_its_id(dsn, db, app, worker):
    failed = add_result(db, "tests.taskapp.add", "default", "FAILURE", args=[2, 3])
    assert app.AsyncResult(failed).state == "FAILURE"
    assert cli(dsn, "retry", failed).exit_code == 0
    worker("-c", "1", "-P", "threads")
    assert app.AsyncResult(failed).get(timeout=60) == 5


# -- revoke ---------------------------------------------------------------------------------


def test_revoke_reports_each_id(dsn, db, app):
    live = add_worker(db, "w", ["default"], ["t"])
    queued = taskapp.add.apply_async((1, 2), countdown=600)
    running = add_job(db, "t", state="STARTED", worker_id=live)
    finished = add_result(db, "t", state="SUCCESS", result=1)
    unknown = str(uuid.uuid4())

    result = cli(dsn, "revoke", queued.id, running, finished, unknown)
    assert result.exit_code == 3
    assert result.stdout.strip() == f"revoked {queued.id}"
    assert f"not revoked {running}: is running: pass --terminate" in result.stderr
    assert f"not revoked {finished}: already finished (SUCCESS)" in result.stderr
    assert f"not revoked {unknown}: no such job" in result.stderr
    assert app.AsyncResult(queued.id).state == "REVOKED"

    terminated = cli(dsn, "revoke", running, "--terminate", "--json")
    assert terminated.exit_code == 0, terminated.output
    assert json.loads(terminated.stdout) == {"revoked": [running], "skipped": {}}
    assert app.AsyncResult(running).state == "REVOKED"
    assert cli(dsn, "revoke").exit_code == 2
