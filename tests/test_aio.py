"""The asyncio producer and results (issue 15): ``adelay``/``aapply_async``/``asend_task``,
``aenqueue_many``, ``atransaction`` on a psycopg AsyncConnection, and ``aget``/``astate``/
``aready``, against the real Postgres and, where a task must run, a real worker. Coroutines
run with ``asyncio.run`` inside plain tests (no pytest plugin)."""

from __future__ import annotations

import asyncio
import builtins
import time
from typing import Any

import psycopg
import pytest

from pgqueue import states
from pgqueue.exceptions import EncodeError, TimeoutError
from pgqueue.options import SEND_OPTIONS, SendOptions
from tests import taskapp
from tests.conftest import wait_for


def job_count(db: psycopg.Connection[Any]) -> int:
    return int(db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0])


def job_ids(db: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in db.execute("SELECT id::text FROM pgqueue.jobs")}


# -- transactional enqueue ---------------------------------------------------------------


def test_async_enqueue_in_a_rolled_back_transaction_leaves_nothing(app, dsn, db):
    async def scenario() -> tuple[str, str]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute("CREATE TABLE orders (id int)")
            await conn.commit()
            await conn.execute("INSERT INTO orders VALUES (1)")
            gone = await taskapp.add.aapply_async((1, 2), connection=conn)
            assert job_ids(db) == set()  # not visible before the commit
            await conn.rollback()

            await conn.execute("INSERT INTO orders VALUES (2)")
            kept = await taskapp.add.aapply_async((3, 4), connection=conn, priority=5)
            await conn.commit()
            return gone.id, kept.id

    gone, kept = asyncio.run(scenario())
    assert job_ids(db) == {kept}
    assert gone != kept
    assert db.execute("SELECT id FROM orders").fetchall() == [(2,)]
    row = db.execute("SELECT args, priority FROM pgqueue.jobs WHERE id = %s", (kept,)).fetchone()
    assert row == ([3, 4], 5)


def test_atransaction_commits_or_rolls_back_the_row_and_the_job_together(app, dsn, db):
    db.execute("CREATE TABLE orders (id int)")

    async def scenario() -> str:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            with pytest.raises(RuntimeError, match="after the insert"):
                async with app.atransaction(conn):
                    await conn.execute("INSERT INTO orders VALUES (1)")
                    await taskapp.add.adelay(1, 1)
                    await app.aenqueue_many([taskapp.add.s(i, i) for i in range(3)])
                    raise RuntimeError("failed after the insert")
            async with app.atransaction(conn):
                await conn.execute("INSERT INTO orders VALUES (2)")
                kept = await app.asend_task("tests.taskapp.add", (2, 2))
            async with conn.cursor() as cur, app.atransaction(cur):
                # A cursor is used as it is: in autocommit, each statement commits.
                await taskapp.add.adelay(5, 5)
            return kept.id

    kept = asyncio.run(scenario())
    assert db.execute("SELECT id FROM orders").fetchall() == [(2,)]
    assert kept in job_ids(db)
    assert job_count(db) == 2


def test_async_enqueue_on_pgqueues_own_connection_commits_at_once(app, db):
    async def scenario() -> list[str]:
        one = await taskapp.add.adelay(1, 2)
        many = await taskapp.add.aapply_async((3, 4), countdown=60, queue="later")
        return [one.id, many.id]

    ids = asyncio.run(scenario())
    assert job_ids(db) == set(ids)
    row = db.execute(
        "SELECT queue, run_at > now() + interval '50 seconds' FROM pgqueue.jobs WHERE id = %s",
        (ids[1],),
    ).fetchone()
    assert row == ("later", True)
    app.close()


def test_aenqueue_many_is_all_or_nothing(app, dsn, db):
    taken = str(taskapp.add.delay(0, 0).id)

    async def scenario() -> list[str]:
        with pytest.raises(EncodeError):
            await app.aenqueue_many([taskapp.add.s(1, 1), taskapp.add.s(object(), 1)])
        # Refused by the database (a task id already taken): none of the batch is written.
        with pytest.raises(psycopg.errors.UniqueViolation):
            await app.aenqueue_many([taskapp.add.s(1, 1), taskapp.add.s(2, 2).set(task_id=taken)])
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await app.aenqueue_many([taskapp.add.s(i, i) for i in range(5)], connection=conn)
            await conn.rollback()
            results = await app.aenqueue_many(
                [taskapp.add.s(i, i) for i in range(50)], connection=conn
            )
            await conn.commit()
        assert await app.aenqueue_many([]) == []
        return [r.id for r in results]

    ids = asyncio.run(scenario())
    assert job_ids(db) == {taken, *ids}
    assert len(ids) == 50
    app.close()


# -- results, with a real worker -------------------------------------------------------------


def test_adelay_is_run_by_a_worker_and_awaited_with_aget(app, worker):
    worker("-c", "2")

    async def scenario() -> tuple[Any, str, bool, list[int]]:
        result = await taskapp.add.adelay(2, 3)
        value = await result.aget(timeout=30)
        many = await app.aenqueue_many([taskapp.async_add.s(i, 1) for i in range(5)])
        values = [await r.aget(timeout=30) for r in many]
        return value, await result.astate(), await result.aready(), values

    value, state, ready, values = asyncio.run(scenario())
    assert (value, state, ready) == (5, states.SUCCESS, True)
    assert values == [1, 2, 3, 4, 5]
    app.close()


def test_aget_wakes_on_notify_not_on_its_interval(app, worker):
    """With a 30 s re-read interval, only the NOTIFY sent when the task finishes can wake
    aget within seconds of the task's end."""
    worker("-c", "1")

    async def scenario() -> tuple[bool, float, Any]:
        result = await taskapp.sleep.adelay(1.5)
        waiting = not await result.aready()
        started = time.monotonic()
        value = await result.aget(timeout=60, interval=30)
        return waiting, time.monotonic() - started, value

    waiting, elapsed, value = asyncio.run(scenario())
    assert waiting  # aget had a task to wait for: it took 1.5 s to run
    assert value == 1.5
    assert elapsed < 15, f"aget returned after {elapsed:.1f} s: woken by its interval"
    app.close()


def test_aget_times_out_with_pgqueues_timeout_error_whatever_it_is_notified(app, db):
    """No worker: the job never finishes. A NOTIFY naming it (any role may send one) makes
    aget read the row again, not return."""

    async def scenario() -> tuple[BaseException, float, str]:
        result = await taskapp.add.adelay(1, 1)

        async def notify_falsely() -> None:
            for _ in range(5):
                await asyncio.sleep(0.1)
                db.execute("SELECT pg_notify('pgqueue_results', %s)", (result.id,))

        started = time.monotonic()
        noise = asyncio.create_task(notify_falsely())
        with pytest.raises(TimeoutError) as info:
            await result.aget(timeout=1.0, interval=30)
        elapsed = time.monotonic() - started
        await noise
        return info.value, elapsed, await result.astate()

    error, elapsed, state = asyncio.run(scenario())
    assert isinstance(error, builtins.TimeoutError)
    assert "did not finish within 1.0 s (state PENDING)" in str(error)
    assert 0.9 < elapsed < 15
    assert state == states.PENDING
    app.close()


def test_aget_propagates_a_failure(app, worker):
    worker("-c", "1")

    async def scenario() -> tuple[BaseException, Any, bool]:
        result = await taskapp.fail.adelay("boom")
        with pytest.raises(ValueError, match="boom") as info:
            await result.aget(timeout=30)
        quiet = await result.aget(timeout=30, propagate=False)
        return info.value, quiet, await result.aready()

    raised, quiet, ready = asyncio.run(scenario())
    assert isinstance(quiet, ValueError) and "boom" in str(quiet)
    assert "Traceback" in (raised.remote_traceback or "")  # type: ignore[attr-defined]
    assert ready
    app.close()


# -- connections the async path refuses, and the other kind's blocks ---------------------------


def test_a_sync_connection_on_the_async_path_is_refused_with_one_clear_error(app, dsn, db):
    async def attempt() -> list[str]:
        errors = []
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            calls = [
                lambda: taskapp.add.aapply_async((1, 2), connection=conn),
                lambda: app.asend_task("tests.taskapp.add", (1, 2), connection=conn),
                lambda: app.aenqueue_many([taskapp.add.s(1, 2)], connection=conn),
                lambda: taskapp.add.aapply_async((1, 2), connection=cur),
                lambda: app.atransaction(conn).__aenter__(),
            ]
            for call in calls:
                with pytest.raises(TypeError) as info:
                    await call()
                errors.append(str(info.value))
        for wrong in ("postgresql://localhost/x", object()):
            with pytest.raises(TypeError, match=r"pass a psycopg\.AsyncConnection or "):
                await taskapp.add.aapply_async((1, 2), connection=wrong)
        async with (
            await psycopg.AsyncConnection.connect(dsn) as aconn,
            aconn.cursor("named") as named,
        ):
            with pytest.raises(TypeError, match="server-side"):
                await taskapp.add.aapply_async((1, 2), connection=named)
        return errors

    errors = asyncio.run(attempt())
    assert len(errors) == 5
    for message in errors:
        assert "psycopg.Connection" in message or "psycopg.Cursor" in message
        assert "a blocking connection, which the async producer cannot use" in message
        assert "apply_async(..., connection=conn)" in message
        assert "pass a psycopg.AsyncConnection or psycopg.AsyncCursor" in message
    assert job_count(db) == 0


def test_an_async_connection_on_the_sync_path_names_the_async_api(app, dsn, db):
    async def attempt() -> str:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises(TypeError) as info:
                taskapp.add.apply_async((1, 2), connection=conn)
            return str(info.value)

    message = asyncio.run(attempt())
    assert "an async connection, which the blocking producer cannot use" in message
    assert "await task.aapply_async(..., connection=conn)" in message
    assert job_count(db) == 0


def test_a_call_of_the_other_kind_inside_a_transaction_block_raises(app, dsn, db):
    """delay() inside atransaction (or adelay() inside transaction) would commit its job on
    pgqueue's own connection whatever the block does: it raises instead."""

    async def scenario() -> list[str]:
        errors = []
        async with (
            await psycopg.AsyncConnection.connect(dsn) as aconn,
            app.atransaction(aconn),
        ):
            for call in (
                lambda: taskapp.add.delay(1, 2),
                lambda: app.enqueue_many([taskapp.add.s(1, 2)]),
            ):
                with pytest.raises(TypeError) as info:
                    call()
                errors.append(str(info.value))
            # Given explicitly, a connection is used whatever the block.
            with psycopg.connect(dsn, autocommit=True) as conn:
                taskapp.add.apply_async((7, 7), connection=conn)
        with psycopg.connect(dsn) as conn, app.transaction(conn):
            with pytest.raises(TypeError) as info:
                await taskapp.add.adelay(1, 2)
            errors.append(str(info.value))
        return errors

    errors = asyncio.run(scenario())
    assert "inside `async with app.atransaction(conn):`" in errors[0]
    assert "await adelay()" in errors[1]
    assert "inside `with app.transaction(conn):`" in errors[2]
    assert [r[0] for r in db.execute("SELECT args FROM pgqueue.jobs")] == [[7, 7]]


def test_send_options_type_lists_every_send_option():
    # link and link_error are taken out before the job's row is worked out (app._linked)
    links = {"link", "link_error"}
    assert set(SendOptions.__annotations__) - links | {"beat_tick"} == SEND_OPTIONS


# -- pgqueue's own async connection -----------------------------------------------------------


def producer_backends(db: psycopg.Connection[Any]) -> list[int]:
    return [
        r[0]
        for r in db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'pgqueue' AND pid <> pg_backend_pid()"
        )
    ]


def test_one_own_connection_per_event_loop_closed_with_its_loop_or_by_aclose(app, db):
    async def two_sends() -> int:
        await taskapp.add.adelay(1, 1)
        await asyncio.gather(*(taskapp.add.adelay(i, i) for i in range(10)))
        return (await app._aconnections.get()).info.backend_pid

    first = asyncio.run(two_sends())
    assert producer_backends(db) == [first]  # one for 11 sends, left open with its loop

    async def on_a_new_loop() -> int:
        pid = (await app._aconnections.get()).info.backend_pid
        # Opening this loop's connection closed the one of the loop that has closed.
        wait_for(lambda: producer_backends(db) == [pid], 10, "the first connection to end")
        await app.aclose()
        return pid

    assert asyncio.run(on_a_new_loop()) != first
    wait_for(lambda: producer_backends(db) == [], 10, "aclose() to end the connection")

    asyncio.run(two_sends())
    assert len(producer_backends(db)) == 1
    app.close()  # closes the connection of a loop that is not running
    wait_for(lambda: producer_backends(db) == [], 10, "app.close() to end the connection")
    assert job_count(db) == 22


def test_own_connection_found_broken_is_replaced_once(app, db):
    async def scenario() -> list[str]:
        first = await taskapp.add.adelay(1, 1)
        pid = (await app._aconnections.get()).info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: pid not in producer_backends(db), 10, "the backend to end")
        second = await taskapp.add.adelay(2, 2)
        value = await app.AsyncResult(second.id).astate()
        await app.aclose()
        return [first.id, second.id, value]

    first, second, state = asyncio.run(scenario())
    assert job_ids(db) == {first, second}
    assert state == states.PENDING
