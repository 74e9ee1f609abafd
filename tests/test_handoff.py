"""Hand-off: an idle worker offers slots, and a new job is claimed for it by the producer's
own insert, so that it starts without a claim round trip. Each test looks at the job row
inside the producer's transaction, before the commit, to see whether it was handed."""

from __future__ import annotations

import signal
from typing import Any

import psycopg

from pgqueue import states
from tests import taskapp
from tests.conftest import WorkerProcess, dsn_of, wait_for


def worker_id(db: psycopg.Connection[Any], w: WorkerProcess) -> str:
    (wid,) = db.execute("SELECT id::text FROM pgqueue.workers WHERE pid = %s", (w.pid,)).fetchone()
    return str(wid)


def offered(db: psycopg.Connection[Any], wid: str) -> int:
    (n,) = db.execute(
        "SELECT count(*) FILTER (WHERE offered) FROM pgqueue.worker_slots WHERE worker_id = %s",
        (wid,),
    ).fetchone()
    return int(n)


def wait_offering(db: psycopg.Connection[Any], w: WorkerProcess, n: int) -> str:
    wid = worker_id(db, w)
    wait_for(lambda: offered(db, wid) == n, what=f"the worker to offer {n} slot(s)")
    return wid


def wait_slots_removed(db: psycopg.Connection[Any], wid: str, what: str) -> None:
    def gone() -> bool:
        row = db.execute(
            "SELECT count(*) FROM pgqueue.worker_slots WHERE worker_id = %s", (wid,)
        ).fetchone()
        return row == (0,)

    wait_for(gone, what=what)


def holder(conn: psycopg.Connection[Any], job_id: str) -> tuple[Any, ...]:
    """(worker_id, state) of a job as the given connection sees it."""
    row = conn.execute(
        "SELECT worker_id::text, state FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_an_idle_worker_is_handed_the_job_in_the_producers_transaction(app, db, worker):
    w = worker("-c", "2")
    wid = wait_offering(db, w, 2)
    with psycopg.connect(dsn_of(db)) as conn:
        r = taskapp.add.apply_async((2, 3), connection=conn)
        # claimed and STARTED for the worker before the producer commits
        assert holder(conn, r.id) == (wid, "STARTED")
        assert offered(conn, wid) == 1
        # no one else sees that yet: the slot is held, the job not there
        assert offered(db, wid) == 2
        conn.commit()
    assert r.get(timeout=30) == 5
    assert r.retries == 0


def test_a_rolled_back_enqueue_takes_the_hand_off_back(app, db, worker):
    w = worker("-c", "1")
    wid = wait_offering(db, w, 1)
    with psycopg.connect(dsn_of(db)) as conn:
        r = taskapp.record.apply_async(("rolled-back",), connection=conn)
        assert holder(conn, r.id) == (wid, "STARTED")
        conn.rollback()
    assert offered(db, wid) == 1  # the slot is offered again, as it was
    assert taskapp.add.delay(1, 1).get(timeout=30) == 2
    assert db.execute("SELECT count(*) FROM test_runs WHERE tag = 'rolled-back'").fetchone() == (0,)
    assert r.state == states.PENDING  # no such job, no result


def test_jobs_no_slot_can_take_are_queued_as_before(app, db, worker):
    w = worker("-c", "2")
    wait_offering(db, w, 2)
    with psycopg.connect(dsn_of(db)) as conn:
        later = taskapp.add.apply_async((1, 2), countdown=1, connection=conn)
        once = taskapp.at_most_once.apply_async(("once", 0), connection=conn)
        other = taskapp.add.apply_async((3, 4), queue="elsewhere", connection=conn)
        big = taskapp.record.apply_async(("x" * 9000,), connection=conn)
        late_call = taskapp.add.apply_async((5, 6), acks_late=False, connection=conn)
        for r in (later, once, other, big, late_call):
            assert holder(conn, r.id)[0] is None, r
        conn.commit()
    assert later.get(timeout=30) == 3
    once.get(timeout=30)
    assert big.get(timeout=30)
    assert late_call.get(timeout=30) == 11
    assert other.state == states.PENDING  # no worker serves that queue


def test_a_batch_fills_the_offered_slots_in_claim_order_and_queues_the_rest(app, db, worker):
    w = worker("-c", "2")
    wid = wait_offering(db, w, 2)
    with psycopg.connect(dsn_of(db)) as conn:
        results = taskapp.add.enqueue_many([(i, 0) for i in range(5)], connection=conn, priority=0)
        urgent = taskapp.add.apply_async((100, 0), priority=9, connection=conn)
        assert holder(conn, urgent.id) == (None, "PENDING")  # the slots went to the batch
        assert [holder(conn, r.id)[0] for r in results] == [wid, wid, None, None, None]
        conn.commit()
    assert [r.get(timeout=30) for r in results] == [0, 1, 2, 3, 4]
    assert urgent.get(timeout=30) == 100


def test_a_sigkilled_idle_worker_is_handed_nothing(app, db, worker):
    a = worker("-c", "1")
    a_id = wait_offering(db, a, 1)
    b = worker("-c", "1")
    b_id = wait_offering(db, b, 1)
    (a_listener,) = db.execute(
        "SELECT DISTINCT listener_pid FROM pgqueue.worker_slots WHERE worker_id = %s", (a_id,)
    ).fetchone()
    a.signal(signal.SIGKILL)
    a.proc.wait(30)
    wait_for(
        lambda: (
            not db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (a_listener,)
            ).fetchone()
        ),
        what="the dead worker's connection to go",
    )
    # its slot is still offered until the rescue removes it, but passed over
    for i in range(3):
        with psycopg.connect(dsn_of(db)) as conn:
            r = taskapp.add.apply_async((i, i), connection=conn)
            assert holder(conn, r.id)[0] in (None, b_id)
            conn.commit()
        assert r.get(timeout=30) == 2 * i
    wait_slots_removed(db, a_id, "the rescue to remove the dead worker's slots")


def test_a_worker_shutting_down_does_not_wait_for_a_producer_holding_its_slot(app, db, worker):
    a = worker("-c", "1")
    a_id = wait_offering(db, a, 1)
    with psycopg.connect(dsn_of(db)) as conn:
        r = taskapp.record.apply_async(("handed-to-a-leaving-worker",), connection=conn)
        assert holder(conn, r.id) == (a_id, "STARTED")
        assert a.stop(timeout=30) == 0  # not held up by this open transaction
        conn.commit()
    # the job is held by a worker that is gone: the next worker's rescue runs it
    worker("-c", "1")
    assert r.get(timeout=60) > 0
    assert r.retries == 1  # counted as a lost run, like any job of a worker that left
    wait_slots_removed(db, a_id, "the rescue to remove the slot the producer held")


def test_a_handed_job_waits_in_the_buffer_when_a_claim_filled_the_slot(app, db, worker):
    w = worker("-c", "1")
    wid = wait_offering(db, w, 1)
    with psycopg.connect(dsn_of(db)) as conn:
        # handed, but not committed yet ...
        handed = taskapp.record.apply_async(("handed",), connection=conn)
        assert holder(conn, handed.id) == (wid, "STARTED")
        # ... while a plain job wakes the worker, which withdraws its offer and claims it
        first = taskapp.hold.delay("first", "release-first")
        wait_for(lambda: first.state == states.STARTED, what="the claimed job to start")
        conn.commit()
    db.execute("INSERT INTO test_runs (tag) VALUES ('release-first')")
    assert first.get(timeout=30) == "released"
    handed.get(timeout=30)
    # run once, and only once its one slot was free
    (runs, ran_after_release) = db.execute(
        "SELECT count(*), bool_and(at > (SELECT at FROM test_runs WHERE tag = 'release-first'))"
        " FROM test_runs WHERE tag = 'handed'"
    ).fetchone()
    assert (runs, ran_after_release) == (1, True)


def test_the_slot_table_stays_one_page_without_vacuum(app, db, worker):
    w = worker("-c", "1")
    wait_offering(db, w, 1)
    for i in range(300):
        assert taskapp.add.delay(i, 0).get(timeout=30) == i
    # Taking and offering a slot are HOT updates, pruned in their page.
    assert db.execute("SELECT pg_relation_size('pgqueue.worker_slots')").fetchone() == (8192,)


def test_jobs_enqueued_from_sql_are_handed_over_too(app, db, worker):
    w = worker("-c", "1")
    wid = wait_offering(db, w, 1)
    with psycopg.connect(dsn_of(db)) as conn:
        (job_id,) = conn.execute(
            "SELECT pgqueue.enqueue('tests.taskapp.add', '[20, 22]')::text"
        ).fetchone()
        assert holder(conn, job_id) == (wid, "STARTED")
        conn.commit()
    assert app.AsyncResult(job_id).get(timeout=30) == 42
