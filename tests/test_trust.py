"""What a notification can make a worker do, and what a connection blip costs.

Any role that can connect may NOTIFY any channel. Here an outsider, a login role with no
grant on the pgqueue schema, forges and replays the notifications workers listen to: a
worker runs only hand-offs the jobs trigger signed, and acts on a revoke only once the
database shows it. And a worker whose backends are terminated keeps its jobs when it
reconnects within worker_reconnect_grace; past the grace, they are rescued."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue import states
from pgqueue.execution import FIELDS
from tests import taskapp
from tests.conftest import WorkerProcess, wait_for
from tests.test_handoff import wait_offering
from tests.test_lifecycle import runs


@pytest.fixture
def outsider(dsn: str, db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A connection as a role that may connect and nothing else."""
    role = f"pgq_outsider_{os.getpid()}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    params = {**conninfo_to_dict(dsn), "user": role}
    params.pop("password", None)
    try:
        with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM pgqueue.jobs")
            yield conn
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def channel_of(db: psycopg.Connection[Any], wid: str) -> str:
    (channel,) = db.execute(
        "SELECT channel FROM pgqueue.worker_channels WHERE worker_id = %s", (wid,)
    ).fetchone()
    return str(channel)


def forged_document(task: str, args: list[Any]) -> list[Any]:
    """A job in the hand-off document's shape (pgqueue.job_document) that no producer
    enqueued: the id is made up."""
    job = {
        "id": "0193f7c2-0000-7000-8000-000000000001",
        "seq": 1,
        "task_name": task,
        "queue": "default",
        "args": args,
        "kwargs": {},
        "priority": 0,
        "run_at": 0,
        "expires_at": None,
        "expired": False,
        "retries": 0,
        "max_retries": None,
        "time_limit": None,
        "soft_time_limit": None,
        "options": {},
        "attempt": 1,
        "started": True,
    }
    return [job[name] for name in FIELDS]


def test_a_forged_hand_off_is_not_run(app, db, worker, outsider):
    w = worker("-c", "2", "-P", "threads")
    channel = channel_of(db, wait_offering(db, w, 2))
    body = json.dumps([1, 1, forged_document("tests.record", ["forged"])])
    for payload in (
        json.dumps(forged_document("tests.record", ["forged"])),  # as pgqueue 0.5 took it
        body,  # unsigned
        "0" * 64 + body,  # signed with a made-up signature
        "0" * 64 + json.dumps([1, 10**9, forged_document("tests.record", ["forged"])]),
        "not even json",
    ):
        outsider.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    # Notifications reach the worker in order: once this job is done, the forged ones were
    # handled before it.
    assert taskapp.record.delay("real").get(timeout=30)
    assert runs(db, "forged") == []
    log = w.output()
    assert "not sent by pgqueue" in log, log
    assert taskapp.add.delay(1, 2).get(timeout=30) == 3  # still serving


def test_a_replayed_hand_off_is_not_run_again(app, db, worker, dsn, outsider):
    w = worker("-c", "2", "-P", "threads")
    channel = channel_of(db, wait_offering(db, w, 2))
    # Anyone may LISTEN on the worker's channel and copy what the trigger sent.
    with psycopg.connect(dsn, autocommit=True) as eavesdropper:
        eavesdropper.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        r = taskapp.record.delay("once")
        assert r.get(timeout=30)
        (note,) = list(eavesdropper.notifies(timeout=10, stop_after=1))
    assert json.loads(note.payload[64:])[2][0] == r.id  # it was a hand-off of this job
    outsider.execute("SELECT pg_notify(%s, %s)", (channel, note.payload))
    assert taskapp.record.delay("after").get(timeout=30)
    assert len(runs(db, "once")) == 1
    assert "not sent by pgqueue" in w.output()


def worker_row(db: psycopg.Connection[Any], w: WorkerProcess) -> tuple[str, int]:
    (wid, lock_key) = db.execute(
        "SELECT id::text, lock_key FROM pgqueue.workers WHERE pid = %s", (w.pid,)
    ).fetchone()
    return str(wid), int(lock_key)


def test_a_forged_revoke_neither_drops_nor_terminates_a_job(app, db, worker, outsider):
    w = worker("-c", "1", "--prefetch-multiplier", "2")
    wid, _ = worker_row(db, w)
    holder = taskapp.hold.delay("holder", "release-holder")
    wait_for(lambda: runs(db, "holder"), what="the first job to start")
    prefetched = taskapp.record.delay("prefetched")
    prefetch = "SELECT worker_id IS NOT NULL AND state = 'PENDING' FROM pgqueue.jobs WHERE id = %s"
    wait_for(
        lambda: db.execute(prefetch, (prefetched.id,)).fetchone() == (True,),
        what="the worker to prefetch the second job",
    )
    for job in (prefetched, holder):
        outsider.execute(
            "SELECT pg_notify('pgqueue_control', %s)",
            (json.dumps({"revoke": job.id, "worker": wid, "terminate": True}),),
        )
    wait_for(lambda: "not sent by pgqueue" in w.output(), what="the forged revokes to be seen")
    db.execute("INSERT INTO test_runs (tag) VALUES ('release-holder')")
    assert holder.get(timeout=30) == "released"
    assert prefetched.get(timeout=30)
    assert len(runs(db, "prefetched")) == 1


def test_a_real_revoke_with_terminate_still_stops_the_task(app, db, worker):
    w = worker("-c", "1")
    r = taskapp.hold.delay("doomed", "never")
    wait_for(lambda: runs(db, "doomed"), what="the task to start")
    app.control.revoke(r.id, terminate=True)
    wait_for(lambda: "terminated its process" in w.output(), what="the child to be killed")
    assert r.state == states.REVOKED


def end_sessions_of(db: psycopg.Connection[Any], w: WorkerProcess) -> None:
    """Terminate a worker's own sessions (claims, outcomes, listener), as a blip would."""
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"pgqueue %:{w.pid}",),
    )


def test_a_blip_within_the_grace_keeps_the_workers_jobs(app, db, worker, monkeypatch):
    # B looks for lost workers every 0.2 s; A's grace is the default (10 s).
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_rescue_interval": 0.2}))
    a = worker("-c", "1")
    r = taskapp.at_most_once.delay("blip", 3)
    wait_for(lambda: runs(db, "blip"), what="the at-most-once task to run on A")
    b = worker("-c", "1")
    # A freezes (its child runs on) and loses its backends: B's rescue finds A's lock gone
    # and must wait the grace out rather than fail the job with WorkerLostError.
    a.signal(signal.SIGSTOP)
    try:
        end_sessions_of(db, a)
        wait_for(
            lambda: "unless they reconnect" in b.output(),
            what="B's rescue to find A's lock missing",
        )
    finally:
        a.signal(signal.SIGCONT)
    wait_for(lambda: "database connection restored" in a.output(), what="A to reconnect")
    assert r.get(timeout=30) is None  # SUCCESS, not WorkerLostError
    (worker_name,) = db.execute(
        "SELECT worker FROM pgqueue.results WHERE task_id = %s", (r.id,)
    ).fetchone()
    assert worker_name.endswith(f":{a.pid}")
    assert len(runs(db, "blip")) == 1
    assert r.retries == 0
    (missing,) = db.execute(
        "SELECT lock_missing_since FROM pgqueue.workers WHERE pid = %s", (a.pid,)
    ).fetchone()
    assert missing is None  # back: the mark is cleared


def test_a_worker_away_past_the_grace_is_rescued(app, db, worker, monkeypatch):
    grace = 3.0
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps({"worker_rescue_interval": 0.2, "worker_reconnect_grace": grace}),
    )
    a = worker("-c", "1")
    r = taskapp.slow_record.delay("away", 20)
    wait_for(lambda: runs(db, "away"), what="the task to run on A")
    b = worker("-c", "1")
    a.signal(signal.SIGSTOP)
    try:
        cut = time.monotonic()
        end_sessions_of(db, a)
        wait_for(lambda: len(runs(db, "away")) == 2, timeout=60, what="B to run the job again")
        assert time.monotonic() - cut >= grace
        a.signal(signal.SIGKILL)
    finally:
        a.signal(signal.SIGCONT)
    assert r.get(timeout=60)["ppid"] == b.pid
    assert r.retries == 1
