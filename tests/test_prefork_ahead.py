"""Jobs a prefork worker holds ahead for its children (worker_prefork_ahead): marked STARTED
before a child is free, started the moment one frees, their time limits counted from then,
never lost or run twice when a child is killed, and dropped by a revoke with terminate.

Real worker processes and a real Postgres; ``-c 1`` so that exactly one job is held.
"""

from __future__ import annotations

import json

import pytest

from pgqueue import states
from pgqueue.exceptions import TaskRevokedError, TimeLimitExceeded
from tests import taskapp
from tests.conftest import wait_for
from tests.test_lifecycle import runs


@pytest.fixture(autouse=True)
def hold_ahead(monkeypatch):
    """Holding ahead is opt-in (worker_prefork_ahead defaults to 0)."""
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_prefork_ahead": 1}))


def held_ahead(db, job_id: str) -> bool:
    """STARTED in the database, though its task has not begun (it records its start)."""
    row = db.execute(
        "SELECT worker_id IS NOT NULL AND state = 'STARTED' FROM pgqueue.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    return row == (True,)


def test_a_job_held_behind_a_hard_time_limit_runs_once_with_its_own_limit(app, db, worker):
    w = worker("-c", "1")
    first = taskapp.hard_limited.delay()  # time_limit=1, sleeps 30 s
    wait_for(lambda: first.state == states.STARTED, what="the first job to start")
    # time_limit=1.2 for a 0.8 s run: counted from when it was held ahead (about 1 s
    # before the first job is killed) it would be killed too.
    behind = taskapp.slow_record.apply_async(("behind", 0.8), time_limit=1.2)
    wait_for(lambda: held_ahead(db, behind.id), what="the second job to be held ahead")
    assert runs(db, "behind") == []  # held, not begun: the child is busy
    assert isinstance(first.get(timeout=30, propagate=False), TimeLimitExceeded)
    assert "hard time limit (1.0 s) exceeded" in w.output()
    # the killed child's replacement runs it, once, to its end
    assert behind.get(timeout=30)["pid"] > 0
    assert len(runs(db, "behind")) == 1
    assert taskapp.add.delay(1, 2).get(timeout=30) == 3
    assert len(runs(db, "behind")) == 1


def test_revoke_with_terminate_drops_a_held_job_and_spares_the_running_one(app, db, worker):
    w = worker("-c", "1")
    holder = taskapp.hold.delay("holder", "release-holder")
    wait_for(lambda: runs(db, "holder"), what="the first job to start")
    held = taskapp.record.delay("held")
    wait_for(lambda: held_ahead(db, held.id), what="the second job to be held ahead")
    assert app.control.revoke(held.id, terminate=True) == [held.id]
    wait_for(
        lambda: f"job {held.id} revoked while it waited for a child" in w.output(),
        what="the worker to drop it",
    )
    db.execute("INSERT INTO test_runs (tag) VALUES ('release-holder')")
    assert holder.get(timeout=30) == "released"  # its child was not killed
    taskapp.record.delay("after").get(timeout=30)
    assert runs(db, "held") == []
    assert held.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        held.get(timeout=5)


def test_a_held_job_counts_as_started_for_a_revoke_without_terminate(app, db, worker):
    worker("-c", "1")
    holder = taskapp.hold.delay("holder", "release-holder")
    wait_for(lambda: runs(db, "holder"), what="the first job to start")
    held = taskapp.record.delay("held")
    wait_for(lambda: held_ahead(db, held.id), what="the second job to be held ahead")
    assert app.control.revoke(held.id) == []  # as for a running job: nothing to do
    db.execute("INSERT INTO test_runs (tag) VALUES ('release-holder')")
    assert holder.get(timeout=30) == "released"
    held.get(timeout=30)
    assert len(runs(db, "held")) == 1


def test_at_most_once_jobs_are_not_held_ahead(app, db, worker):
    worker("-c", "1")
    holder = taskapp.hold.delay("holder", "release-holder")
    wait_for(lambda: runs(db, "holder"), what="the first job to start")
    # Claimed in one batch: the acks_late job behind the at-most-once one is not held
    # either (jobs are held in claim order).
    once = taskapp.at_most_once.apply_async(("once", 0), priority=5)
    later = taskapp.record.delay("later")

    def claimed() -> bool:
        rows = db.execute(
            "SELECT count(*) FROM pgqueue.jobs WHERE worker_id IS NOT NULL AND id IN (%s, %s)",
            (once.id, later.id),
        ).fetchone()
        return rows == (2,)

    wait_for(claimed, what="both jobs to be claimed")
    # The loop holds jobs ahead in its first turn after a claim, within milliseconds: a
    # second without it is a margin, not a synchronisation.
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: held_ahead(db, once.id) or held_ahead(db, later.id), timeout=1)
    db.execute("INSERT INTO test_runs (tag) VALUES ('release-holder')")
    assert holder.get(timeout=30) == "released"
    assert once.get(timeout=30) is None
    later.get(timeout=30)


def test_without_holding_ahead_a_job_waits_unstarted(app, db, worker, monkeypatch):
    monkeypatch.setenv("PGQUEUE_TEST_CONF", json.dumps({"worker_prefork_ahead": 0}))
    worker("-c", "1")
    holder = taskapp.hold.delay("holder", "release-holder")
    wait_for(lambda: runs(db, "holder"), what="the first job to start")
    waiting = taskapp.record.delay("waiting")

    def claimed_not_started() -> bool:
        row = db.execute(
            "SELECT worker_id IS NOT NULL AND state = 'PENDING' FROM pgqueue.jobs WHERE id = %s",
            (waiting.id,),
        ).fetchone()
        return row == (True,)

    wait_for(claimed_not_started, what="the second job to be claimed")
    db.execute("INSERT INTO test_runs (tag) VALUES ('release-holder')")
    assert holder.get(timeout=30) == "released"
    waiting.get(timeout=30)
    assert len(runs(db, "waiting")) == 1
