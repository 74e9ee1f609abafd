"""Workflows from asyncio code: ``aapply_async``/``adelay`` on signatures, chains, groups and
chords, ``link``/``link_error`` on ``aapply_async``/``asend_task``, and ``GroupResult.aget``,
against the real Postgres and, where a task must run, a real worker. Coroutines run with
``asyncio.run`` inside plain tests (no pytest plugin)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from pgqueue import AsyncResult, GroupResult, chain, chord, group
from pgqueue.exceptions import TimeoutError
from tests import taskapp
from tests.conftest import wait_for

WORKFLOW_TABLES = ("jobs", "workflows", "workflow_members", "chords")


def runs(db: psycopg.Connection[Any], tag: str) -> int:
    row = db.execute("SELECT count(*) FROM test_runs WHERE tag = %s", (tag,)).fetchone()
    assert row is not None
    return int(row[0])


def counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        table: db.execute(f"SELECT count(*) FROM pgqueue.{table}").fetchone()[0]
        for table in WORKFLOW_TABLES
    }


def test_async_chain_of_three_is_run_by_a_worker_and_awaited_with_aget(app, worker):
    worker("-c", "2")

    async def scenario() -> tuple[int, int, int, Any]:
        last = await chain(taskapp.add.s(1, 2), taskapp.add.s(10), taskapp.mul.s(2)).aapply_async()
        piped = await (taskapp.add.s(1, 1) | taskapp.add.si(5, 5)).adelay()
        second = last.parent
        return (
            await last.aget(timeout=30),
            await second.aget(timeout=5),
            await second.parent.aget(timeout=5),
            (await piped.aget(timeout=30), second.parent.parent),
        )

    value, middle, first, (piped, before_first) = asyncio.run(scenario())
    assert (value, middle, first) == (26, 13, 3)
    assert piped == 10 and before_first is None


def test_async_chord_calls_back_once_with_the_values_in_order(app, db, worker):
    worker("-c", "2")

    async def scenario() -> tuple[int, list[int]]:
        result = await chord(
            [taskapp.add.s(i, i) for i in range(20)], taskapp.tsum.s(tag="achord")
        ).aapply_async()
        assert isinstance(result.parent, GroupResult)
        return await result.aget(timeout=60), await result.parent.aget(timeout=5)

    total, header = asyncio.run(scenario())
    assert total == sum(2 * i for i in range(20))
    assert header == [2 * i for i in range(20)]
    assert runs(db, "achord") == 1


def test_rolled_back_async_workflow_leaves_nothing(app, dsn, db):
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await chain(taskapp.add.s(1, 2), taskapp.add.s(3)).aapply_async(connection=conn)
            await chord([taskapp.add.s(i, i) for i in range(3)], taskapp.tsum.s()).aapply_async(
                connection=conn
            )
            await group(taskapp.add.s(1, 1), taskapp.add.s(2, 2)).aapply_async(connection=conn)
            await taskapp.add.aapply_async((1, 2), connection=conn, link=taskapp.collect.s())
            await taskapp.add.s(5, 5).aapply_async(connection=conn, link_error=taskapp.errback.s())
            assert counts(db)["jobs"] == 0  # not visible before the commit
            await conn.rollback()
        assert counts(db) == dict.fromkeys(WORKFLOW_TABLES, 0)

        # The same calls inside atransaction, without connection=: the block's connection.
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            with pytest.raises(RuntimeError, match="roll back"):
                async with app.atransaction(conn):
                    await chain(taskapp.add.s(1, 2), taskapp.add.s(3)).adelay()
                    await app.asend_task("tests.taskapp.add", (1, 1), link=taskapp.collect.s())
                    raise RuntimeError("roll back")
            assert counts(db) == dict.fromkeys(WORKFLOW_TABLES, 0)
            async with app.atransaction(conn):
                await chain(taskapp.add.s(1, 2), taskapp.add.s(3)).adelay()
        assert counts(db)["jobs"] == 1
        assert db.execute("SELECT kind FROM pgqueue.workflows").fetchall() == [("chain",)]

    asyncio.run(scenario())


def test_link_and_link_error_on_the_async_api(app, db, worker):
    worker("-c", "2")
    after = taskapp.collect.s("after").set(task_id="00000000-0000-4000-8000-000000000011")

    async def scenario() -> tuple[int, list[Any], str]:
        r = await taskapp.add.aapply_async((1, 2), link=after, link_error=taskapp.errback.s())
        bad = await app.asend_task(
            "tests.taskapp.fail",
            ["oops"],
            link=taskapp.errback.si("not me"),
            link_error=[taskapp.errback.s()],
        )
        linked = AsyncResult(after.options["task_id"], app=app)
        return await r.aget(timeout=30), await linked.aget(timeout=30), bad.id

    value, linked, bad = asyncio.run(scenario())
    assert value == 3 and linked == [3, "after"]
    wait_for(lambda: runs(db, f"errback:{bad}"), what="the errback with the failed id")
    assert runs(db, "errback:not me") == 0


def test_group_result_aget_aready_and_acompleted_count(app, worker):
    async def before_any_worker() -> GroupResult:
        result = await group(taskapp.add.s(i, i) for i in range(10)).aapply_async()
        assert isinstance(result, GroupResult)
        assert not await result.aready() and await result.acompleted_count() == 0
        with pytest.raises(TimeoutError, match="10 of 10 member"):
            await result.aget(timeout=0.5)
        return result

    result = asyncio.run(before_any_worker())
    worker("-c", "2")

    async def awaited() -> tuple[list[int], bool, int, list[int] | None]:
        values = await result.aget(timeout=60, interval=30)  # woken by NOTIFY, not interval
        restored = GroupResult.restore(result.id, app=app)
        return (
            values,
            await result.aready(),
            await result.acompleted_count(),
            None if restored is None else await restored.aget(timeout=5),
        )

    values, ready, completed, again = asyncio.run(awaited())
    assert values == again == [2 * i for i in range(10)]
    assert ready and completed == 10
