"""Unique jobs: a second enqueue of a key already held returns the existing job, decided by
a unique index, across concurrent producers and inside the callers' transactions."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from pgqueue import PgQueue, chain
from pgqueue.exceptions import ConfigurationError
from tests import taskapp
from tests.conftest import dsn_of, wait_for


def jobs_with_key(db: psycopg.Connection[Any], key: str) -> list[str]:
    rows = db.execute(
        "SELECT id::text FROM pgqueue.jobs WHERE unique_key = %s ORDER BY seq", (key,)
    ).fetchall()
    return [r[0] for r in rows]


def state_of(db: psycopg.Connection[Any], job_id: str) -> str | None:
    row = db.execute("SELECT state FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    return None if row is None else str(row[0])


def test_a_second_enqueue_of_a_queued_key_returns_the_existing_job(app, db):
    first = taskapp.add.apply_async((1, 2), unique_key="invoice:42")
    second = taskapp.add.apply_async((3, 4), unique_key="invoice:42")
    other = taskapp.add.apply_async((1, 2), unique_key="invoice:43")
    assert second.id == first.id != other.id
    assert jobs_with_key(db, "invoice:42") == [first.id]
    # the first call's arguments stand
    assert db.execute("SELECT args FROM pgqueue.jobs WHERE id = %s", (first.id,)).fetchone() == (
        [1, 2],
    )


def test_concurrent_producers_racing_on_one_key_make_one_job_and_all_get_its_id(app, db):
    n = 8
    barrier = threading.Barrier(n)
    ids: list[str] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with psycopg.connect(dsn_of(db)) as conn:
                barrier.wait(timeout=30)
                r = taskapp.add.apply_async((1, 1), unique_key="race", connection=conn)
                # held open a moment, so that the others wait on this transaction
                conn.execute("SELECT pg_sleep(0.1)")
                conn.commit()
                ids.append(r.id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(ids) == n
    assert len(set(ids)) == 1
    assert jobs_with_key(db, "race") == ids[:1]


def test_a_key_taken_in_a_rolled_back_transaction_is_free_again(app, db):
    with psycopg.connect(dsn_of(db)) as first, psycopg.connect(dsn_of(db)) as second:
        lost = taskapp.add.apply_async((1, 1), unique_key="rb", connection=first)
        got: list[str] = []
        waiting = threading.Thread(
            target=lambda: got.append(
                taskapp.add.apply_async((2, 2), unique_key="rb", connection=second).id
            )
        )
        waiting.start()
        # the second inserter waits on the first's transaction...
        wait_for(
            lambda: db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ).fetchone(),
            what="the second enqueue to wait for the first transaction",
        )
        first.rollback()
        # ...and, that one rolled back, inserts its own job
        waiting.join(timeout=30)
        second.commit()
    assert got and got[0] != lost.id
    assert jobs_with_key(db, "rb") == got
    assert state_of(db, lost.id) is None


def test_the_task_declares_its_key_from_named_arguments(app, db):
    one = taskapp.sync_customer.delay(1)
    again = taskapp.sync_customer.apply_async(kwargs={"customer_id": 1, "full": True})
    two = taskapp.sync_customer.delay(2)
    assert one.id == again.id != two.id
    assert jobs_with_key(db, "tests.taskapp.sync_customer:[1]") == [one.id]
    # a call's own key wins over the task's
    own = taskapp.sync_customer.apply_async((1,), unique_key="mine")
    assert own.id not in (one.id, two.id)


def test_unique_until_started_frees_the_key_when_a_worker_takes_the_job(app, db, worker):
    first = taskapp.sleep.apply_async((2.0,), unique_key="nightly")
    # no prefetch: a job claimed into the buffer would have been taken (and its key freed)
    worker("-c", "1", "--pool", "threads", "--prefetch-multiplier", "1")
    wait_for(lambda: state_of(db, first.id) == "STARTED", what="the job to start")
    second = taskapp.sleep.apply_async((0.0,), unique_key="nightly")
    assert second.id != first.id
    third = taskapp.sleep.apply_async((0.0,), unique_key="nightly")
    assert third.id == second.id  # queued behind the running one
    assert first.get(timeout=60) == 2.0
    assert second.get(timeout=60) == 0.0


def test_unique_until_finished_holds_the_key_while_running_and_frees_it_after(app, db, worker):
    first = taskapp.ship.apply_async((7,), {"seconds": 1.0})
    worker("-c", "1", "--pool", "threads")
    wait_for(lambda: state_of(db, first.id) == "STARTED", what="the job to start")
    assert taskapp.ship.delay(7).id == first.id
    assert first.get(timeout=60) == 7
    after = taskapp.ship.delay(7)
    assert after.id != first.id
    assert after.get(timeout=60) == 7


def test_enqueue_many_dedupes_within_the_batch_and_against_the_table(app, db):
    held = taskapp.add.apply_async((0, 0), unique_key="b:held")
    sigs = [
        taskapp.add.s(1, 1).set(unique_key="b:1"),
        taskapp.add.s(2, 2),
        taskapp.add.s(3, 3).set(unique_key="b:1"),
        taskapp.add.s(4, 4).set(unique_key="b:held"),
        taskapp.sync_customer.s(5),
        taskapp.sync_customer.s(5),
    ]
    # on pgqueue's own connection (COPY for the plain job, the unique statement for the rest)
    own = app.enqueue_many(sigs)
    assert own[0].id == own[2].id and own[3].id == held.id and own[4].id == own[5].id
    assert len({r.id for r in own}) == 4
    # on the caller's connection: one statement; the keys are all taken now
    with psycopg.connect(dsn_of(db)) as conn:
        again = app.enqueue_many(sigs, connection=conn)
    assert [r.id for r in again][::2] == [r.id for r in own][::2]
    assert again[1].id != own[1].id  # the job without a key is a new one
    (n,) = db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
    assert n == 1 + 3 + 1  # held, b:1, the plain job and customer 5; the second plain job


def test_sql_enqueue_takes_a_unique_key_and_keeps_its_old_signature(app, db):
    (a,) = db.execute(
        "SELECT pgqueue.enqueue('tests.taskapp.add', '[1, 2]', unique_key => 'sql:1')::text"
    ).fetchone()
    (b,) = db.execute(
        "SELECT pgqueue.enqueue('tests.taskapp.add', '[3, 4]', unique_key => 'sql:1',"
        " unique_until => 'finished')::text"
    ).fetchone()
    (c,) = db.execute(
        "SELECT pgqueue.enqueue('tests.taskapp.add', '[5, 6]', '{}', 'default', 0, NULL, 10)::text"
    ).fetchone()
    assert a == b != c
    assert taskapp.add.apply_async((1, 1), unique_key="sql:1").id == a


def test_bad_unique_options_are_refused_before_anything_is_written(app, db):
    with pytest.raises(TypeError, match="non-empty string"):
        taskapp.add.apply_async((1, 1), unique_key="")
    with pytest.raises(ValueError, match="unique_until must be"):
        taskapp.add.apply_async((1, 1), unique_key="k", unique_until="forever")
    with pytest.raises(TypeError, match="needs a unique key"):
        taskapp.add.apply_async((1, 1), unique_until="finished")
    with pytest.raises(ValueError, match="at most 2000 bytes"):
        taskapp.add.apply_async((1, 1), unique_key="x" * 3000)
    with pytest.raises(TypeError, match="sync_customer"):
        taskapp.sync_customer.delay(1, 2, 3)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)
    other = PgQueue("other")
    with pytest.raises(ConfigurationError, match="which the task does not take"):
        other.task(unique=("nope",))(lambda customer_id: None)


def test_async_producers_return_the_existing_job_too(app, db):
    async def scenario() -> list[Any]:
        first = await taskapp.add.aapply_async((1, 1), unique_key="aio:1")
        again = await taskapp.add.aapply_async((2, 2), unique_key="aio:1")
        batch = await app.aenqueue_many(
            [taskapp.add.s(3, 3).set(unique_key="aio:1"), taskapp.add.s(4, 4)]
        )
        return [first, again, *batch]

    first, again, same, other = asyncio.run(scenario())
    assert again.id == first.id == same.id != other.id
    assert jobs_with_key(db, "aio:1") == [first.id]


def test_a_workflow_step_refuses_a_unique_key_and_ignores_the_tasks(app, db):
    with pytest.raises(TypeError, match="cannot take unique_key"):
        chain(taskapp.add.s(1, 1).set(unique_key="wf"), taskapp.add.s(2)).apply_async()
    chain(taskapp.sync_customer.s(9), taskapp.add.s(2)).apply_async()
    chain(taskapp.sync_customer.s(9), taskapp.add.s(2)).apply_async()
    assert db.execute("SELECT count(*), count(unique_key) FROM pgqueue.jobs").fetchone() == (2, 0)
