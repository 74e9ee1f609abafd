"""Pausing a queue: no worker claims from it or is handed its jobs, running jobs finish,
enqueueing goes on, the state outlives workers; resuming wakes the workers at once."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from click.testing import CliRunner

from pgqueue import queue_controls
from pgqueue.cli import main as cli_main
from pgqueue.metrics import QueueSampler
from tests import taskapp
from tests.conftest import dsn_of, wait_for


def cli(dsn: str, *args: str) -> Any:
    return CliRunner().invoke(cli_main, ["--dsn", dsn, *args])


def unclaimed(db: psycopg.Connection[Any], queue: str = "default") -> int:
    (n,) = db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE worker_id IS NULL AND queue = %s", (queue,)
    ).fetchone()
    return int(n)


def started_since(db: psycopg.Connection[Any], since: Any) -> int:
    """Jobs STARTED (running or finished) at or after ``since``, on the database's clock."""
    (n,) = db.execute(
        "SELECT (SELECT count(*) FROM pgqueue.jobs WHERE started_at >= %(t)s)"
        " + (SELECT count(*) FROM pgqueue.results WHERE date_started >= %(t)s)",
        {"t": since},
    ).fetchone()
    return int(n)


def test_pause_stops_claims_within_a_second_and_resume_restarts_them(app, db, worker):
    worker("-c", "2", "--pool", "threads")
    jobs = [taskapp.sleep.delay(0.05) for _ in range(400)]
    wait_for(lambda: unclaimed(db) < 390, what="the worker to get going")
    assert app.control.pause_queue("default") is True
    (paused_at,) = db.execute("SELECT now()").fetchone()
    # Jobs claimed into the worker's buffer before the pause still run (at most a batch of
    # 0.05 s jobs); once they are done nothing is claimed or started any more.
    wait_for(
        lambda: db.execute(
            "SELECT count(*) = 0 FROM pgqueue.jobs WHERE worker_id IS NOT NULL"
        ).fetchone()[0],
        timeout=10,
        what="the jobs claimed before the pause to finish",
    )
    (fence,) = db.execute("SELECT now()").fetchone()
    # the buffer drains within a second of the pause (generous: it holds a few 0.05 s jobs)
    assert (fence - paused_at).total_seconds() < 1.0
    left = unclaimed(db)
    time.sleep(1.5)
    assert started_since(db, fence) == 0
    assert unclaimed(db) == left > 0
    assert app.control.paused_queues() == ["default"]
    # enqueueing goes on while paused
    late = taskapp.add.delay(1, 2)
    assert unclaimed(db) == left + 1
    assert app.control.resume_queue("default") is True
    # Woken by the resume's NOTIFY, not the 5 s poll: the first job starts at once.
    t0 = time.monotonic()
    wait_for(lambda: started_since(db, fence) > 0, timeout=30, what="a claim after resume")
    assert time.monotonic() - t0 < 3.0
    assert late.get(timeout=60) == 3
    for r in jobs:
        r.get(timeout=120)
    assert paused_at < fence


def test_a_running_job_finishes_after_its_queue_is_paused(app, db, worker):
    worker("-c", "1", "--pool", "threads")
    running = taskapp.sleep.delay(1.0)
    wait_for(
        lambda: db.execute(
            "SELECT 1 FROM pgqueue.jobs WHERE id = %s AND state = 'STARTED'", (running.id,)
        ).fetchone(),
        what="the job to start",
    )
    app.control.pause_queue("default")
    assert running.get(timeout=60) == 1.0


def test_a_paused_queue_stays_paused_across_worker_restarts_and_other_queues_run(app, db, worker):
    assert app.control.pause_queue("default") is True
    assert app.control.pause_queue("default") is False  # already paused
    held = taskapp.add.delay(1, 1)
    w = worker("-c", "2", "-Q", "default,other")
    other = taskapp.add.apply_async((2, 2), queue="other")
    assert other.get(timeout=60) == 4
    w.stop()
    worker("-c", "2", "-Q", "default,other")
    assert taskapp.add.apply_async((3, 3), queue="other").get(timeout=60) == 6
    assert held.state == "PENDING"
    assert unclaimed(db) == 1
    app.control.resume_queue("default")
    assert held.get(timeout=60) == 2


def test_an_idle_worker_is_not_handed_a_job_of_a_paused_queue(app, db, worker):
    w = worker("-c", "2")
    (wid,) = db.execute("SELECT id FROM pgqueue.workers WHERE pid = %s", (w.pid,)).fetchone()
    wait_for(
        lambda: db.execute(
            "SELECT count(*) FILTER (WHERE offered) = 2 FROM pgqueue.worker_slots"
            " WHERE worker_id = %s",
            (wid,),
        ).fetchone()[0],
        what="the worker to offer its slots",
    )
    app.control.pause_queue("default")
    with psycopg.connect(dsn_of(db)) as conn:
        r = taskapp.add.apply_async((2, 3), connection=conn)
        (holder,) = conn.execute(
            "SELECT worker_id FROM pgqueue.jobs WHERE id = %s", (r.id,)
        ).fetchone()
        assert holder is None  # not handed in the producer's transaction
    app.control.resume_queue("default")
    assert r.get(timeout=60) == 5


def test_pause_and_resume_in_sql_take_effect_when_the_transaction_commits(app, db):
    with psycopg.connect(dsn_of(db)) as conn:
        assert conn.execute("SELECT pgqueue.pause_queue('mail')").fetchone() == (True,)
        conn.rollback()
    assert queue_controls.paused_queues(db) == []
    db.execute("LISTEN pgqueue_jobs")
    with psycopg.connect(dsn_of(db)) as conn:
        conn.execute("SELECT pgqueue.pause_queue('mail')")
        conn.commit()
        assert conn.execute("SELECT pgqueue.resume_queue('mail')").fetchone() == (True,)
        assert conn.execute("SELECT pgqueue.resume_queue('mail')").fetchone() == (False,)
        conn.commit()
    heard = [n.payload for n in db.notifies(timeout=5, stop_after=1)]
    assert heard == ["mail"]
    assert queue_controls.paused_queues(db) == []


def test_an_empty_queue_name_is_refused(app):
    try:
        app.control.pause_queue("")
    except ValueError as exc:
        assert "non-empty string" in str(exc)
    else:
        raise AssertionError("an empty name was accepted")


def test_cli_pauses_lists_resumes_and_status_shows_it(app, dsn, db):
    taskapp.add.delay(1, 1)
    paused = cli(dsn, "queue", "pause", "default")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == "paused default"
    assert cli(dsn, "queue", "pause", "default").stdout.strip() == "default was paused already"
    listed = cli(dsn, "queue", "list")
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("default"))
    assert row[1] == "PAUSED" and row[-3:] == ["1", "0", "0"]
    as_json = json.loads(cli(dsn, "queue", "list", "--json").stdout)
    assert as_json[0]["name"] == "default" and as_json[0]["paused"] is True
    status = cli(dsn, "status")
    assert "Paused (nothing is claimed from them" in status.stdout
    assert "default" in status.stdout.splitlines()[-1]
    assert json.loads(cli(dsn, "status", "--json").stdout)[0]["paused"] is True
    resumed = cli(dsn, "queue", "resume", "default")
    assert resumed.stdout.strip() == "resumed default"
    assert cli(dsn, "queue", "resume", "default").stdout.strip() == "default was not paused"
    assert "Paused" not in cli(dsn, "status").stdout


def test_the_paused_metric_exports_each_queues_state(app, db):
    taskapp.add.apply_async((1, 1), queue="busy")
    app.control.pause_queue("mail")
    sampler = QueueSampler(app, interval=0)
    try:
        families = {f.name: f for f in sampler.collect()}
        values = {s.labels["queue"]: s.value for s in families["pgqueue_queue_paused"].samples}
        assert values == {"busy": 0.0, "mail": 1.0}
        app.control.resume_queue("mail")
        families = {f.name: f for f in sampler.collect()}
        values = {s.labels["queue"]: s.value for s in families["pgqueue_queue_paused"].samples}
        assert values == {"busy": 0.0, "mail": 0.0}
    finally:
        sampler.close()
