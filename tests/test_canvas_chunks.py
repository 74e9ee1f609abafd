"""map, starmap and chunks (pgqueue/mapping.py, mapjobs.py) with real workers and a real
Postgres: results and their order, failures, the per-task rules a map job must not bypass
(refused when sent, and again in the worker for a job written by hand), routing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import AsyncResult, GroupResult, chain, chunks, group, states, xmap, xstarmap
from pgqueue.exceptions import NotRegistered
from tests import chunkapp, taskapp
from tests.conftest import WorkerProcess


@pytest.fixture
def chunk_worker(dsn: str, db: psycopg.Connection[Any]) -> Iterator[Callable[..., WorkerProcess]]:
    """Workers of tests.chunkapp:app (taskapp's tasks and tests.limited_record)."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        w = WorkerProcess(dsn, list(args), db, app="tests.chunkapp:app")
        started.append(w)
        return w.wait_ready()

    yield start
    for w in started:
        w.close()


def job_row(db: psycopg.Connection[Any], job_id: str) -> tuple[str, str, str]:
    """A job's task name, queue and state: of its row while queued, else of its result."""
    row = db.execute(
        "SELECT task_name, queue, state FROM pgqueue.jobs WHERE id = %(id)s UNION ALL "
        "SELECT task_name, queue, state FROM pgqueue.results WHERE task_id = %(id)s",
        {"id": job_id},
    ).fetchone()
    assert row is not None, f"no job nor result {job_id}"
    return row[0], row[1], row[2]


def test_every_app_has_the_built_in_map_tasks(app: Any) -> None:
    assert {"pgqueue.map", "pgqueue.starmap"} <= set(app.tasks)
    assert "pgqueue.chunks" not in app.tasks  # chunks are worked out when sent


def test_map_and_starmap_are_one_job_returning_the_list_of_results(
    app: Any, worker: Any, db: psycopg.Connection[Any]
) -> None:
    worker("-c", "2")
    mapped = taskapp.add.starmap([(1, 2), (3, 4), (5, 6)]).delay()
    assert isinstance(mapped, AsyncResult)
    assert mapped.get(timeout=30) == [3, 7, 11]
    assert job_row(db, mapped.id)[0] == "pgqueue.starmap"
    # map: one argument per item; bind=True tasks see a request of the item's own
    info = taskapp.request_info.map(["a", "b"]).apply_async().get(timeout=30)
    assert [i["args"] for i in info] == [["a"], ["b"]]
    assert [i["id"] for i in info] == [None, None]  # called directly, as in Celery
    assert db.execute("SELECT count(*) FROM pgqueue.results").fetchone() == (2,)


def test_chunks_of_100_items_by_10_are_10_jobs_in_order(
    app: Any, worker: Any, db: psycopg.Connection[Any]
) -> None:
    worker("-c", "4")
    parts = taskapp.add.chunks(zip(range(100), range(100), strict=True), 10)
    assert isinstance(parts, chunks) and isinstance(parts.group(), group)
    result = parts.apply_async()
    assert isinstance(result, GroupResult) and len(result) == 10
    values = result.get(timeout=60)
    assert values == [[2 * i for i in range(k, k + 10)] for k in range(0, 100, 10)]
    names = db.execute("SELECT task_name, count(*) FROM pgqueue.results GROUP BY 1").fetchall()
    assert names == [("pgqueue.starmap", 10)]
    uneven = taskapp.add.chunks([(1, 1)] * 5, 2).delay().get(timeout=30)
    assert uneven == [[2, 2], [2, 2], [2]]


def test_a_failing_item_fails_its_chunk_with_the_items_exception(app: Any, worker: Any) -> None:
    worker("-c", "2")
    result = taskapp.add.chunks([(1, 1), (2, 2), (3, "x"), (4, 4)], 2).apply_async()
    with pytest.raises(TypeError, match="unsupported operand"):
        result.get(timeout=30)
    values = result.get(timeout=30, propagate=False)
    assert values[0] == [2, 4]
    assert isinstance(values[1], TypeError)
    assert [r.state for r in result.results] == [states.SUCCESS, states.FAILURE]


def test_empty_items(app: Any, worker: Any) -> None:
    worker()
    assert taskapp.add.map([]).delay().get(timeout=30) == []
    assert taskapp.add.starmap([]).delay().get(timeout=30) == []
    empty = taskapp.add.chunks([], 10).apply_async()
    assert len(empty) == 0 and empty.get(timeout=5) == []


def test_tasks_with_per_task_rules_are_refused_when_sent(app: Any) -> None:
    limited = [taskapp.two_at_a_time, taskapp.rated, taskapp.sync_customer, taskapp.ship]
    for task in limited:
        for make in (task.map, task.starmap):
            with pytest.raises(TypeError, match=f"{task.name} cannot run in a map"):
                make([])
        with pytest.raises(TypeError, match=f"{task.name} cannot run in a map"):
            task.chunks([], 1)
    with pytest.raises(TypeError, match="sensitive=True"):
        taskapp.charge_card.starmap([("4111", 1)])
    with pytest.raises(TypeError, match="async def"):
        xmap(_async_task(app), [1])
    with pytest.raises(TypeError, match="each item is a list or tuple"):
        taskapp.add.starmap([1, 2])
    with pytest.raises(ValueError, match="n is a positive int"):
        taskapp.add.chunks([(1, 2)], 0)


def _async_task(app: Any) -> Any:
    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        return x

    task = app.task(name="tests.chunks_async")(coro)
    app.tasks.pop(task.name)  # made for this test only
    return task


def test_a_hand_written_map_job_for_a_limited_task_fails_in_the_worker(
    app: Any, chunk_worker: Any, db: psycopg.Connection[Any]
) -> None:
    chunk_worker("-c", "2")
    with pytest.raises(TypeError, match=r"tests\.limited_record cannot run in a map"):
        chunkapp.limited_record.map(["x"])
    # what anyone able to enqueue can write: the built-in's arguments by hand
    for builtin, items in (("pgqueue.map", ["m1", "m2"]), ("pgqueue.starmap", [["s1"]])):
        forged = app.send_task(builtin, kwargs={"task": "tests.limited_record", "it": items})
        with pytest.raises(TypeError, match="concurrency_limit"):
            forged.get(timeout=30)
        assert forged.state == states.FAILURE
    unknown = app.send_task("pgqueue.map", kwargs={"task": "no.such.task", "it": [1]})
    with pytest.raises(NotRegistered, match=r"'no\.such\.task' is not registered"):
        unknown.get(timeout=30)
    nested = app.send_task("pgqueue.map", kwargs={"task": "pgqueue.map", "it": [1]})
    with pytest.raises(TypeError, match="itself a built-in"):
        nested.get(timeout=30)
    bad = app.send_task("pgqueue.starmap", args=["tests.taskapp.add", [1, 2]])
    with pytest.raises(TypeError, match="each item is a JSON array"):
        bad.get(timeout=30)
    # nothing of the refused task ran, and the allowed one still does
    assert db.execute("SELECT count(*) FROM test_runs").fetchone() == (0,)
    assert app.send_task("pgqueue.map", args=["tests.record", ["ok"]]).get(timeout=30)
    assert db.execute("SELECT tag FROM test_runs").fetchall() == [("ok",)]


def test_a_map_job_goes_to_the_wrapped_tasks_queue(
    app: Any, worker: Any, db: psycopg.Connection[Any]
) -> None:
    sent = taskapp.send_email.map(["a@b.c"]).delay()
    chunked = taskapp.send_email.chunks([("d@e.f",)], 1).apply_async()
    assert job_row(db, sent.id)[1] == "emails"
    assert job_row(db, chunked.results[0].id)[1] == "emails"
    # a worker of the default queue runs a default map, and leaves the emails' ones
    worker("-Q", "default")
    assert taskapp.add.starmap([(1, 1)]).delay().get(timeout=30) == [2]
    assert job_row(db, sent.id)[2] == states.PENDING
    worker("-Q", "emails")
    assert sent.get(timeout=30) == ["sent to a@b.c"]
    assert chunked.get(timeout=30) == [["sent to d@e.f"]]
    # apply_async's own queue wins, as for the task itself
    moved = xstarmap(taskapp.send_email, [("x@y.z",)]).apply_async(queue="default")
    assert job_row(db, moved.id)[1] == "default"
    assert moved.get(timeout=30) == ["sent to x@y.z"]


def test_chunks_as_a_chord_header_and_maps_in_a_chain(app: Any, worker: Any) -> None:
    worker("-c", "2")
    header = taskapp.add.chunks([(1, 1), (2, 2), (3, 3)], 2)
    result = (header.group() | taskapp.collect.s("end")).apply_async()
    assert result.get(timeout=30) == [[[2, 4], [6]], "end"]
    piped = (taskapp.add.chunks([(1, 2)], 1) | taskapp.collect.s("x")).apply_async()
    assert piped.get(timeout=30) == [[[3]], "x"]
    # a map is immutable: in a chain it takes no result from the step before
    chained = chain(taskapp.add.si(1, 1), taskapp.mul.starmap([(2, 3)])).apply_async()
    assert chained.get(timeout=30) == [6]
    assert chained.parent is not None and chained.parent.get(timeout=5) == 2


def test_aapply_async_sends_maps_and_chunks(app: Any, worker: Any) -> None:
    worker()

    async def scenario() -> tuple[AsyncResult, GroupResult]:
        mapped = await taskapp.add.starmap([(1, 2)]).aapply_async()
        parts = await taskapp.add.chunks([(1, 2), (3, 4)], 1).aapply_async()
        return mapped, parts

    mapped, parts = asyncio.run(scenario())
    assert mapped.get(timeout=30) == [3]
    assert parts.get(timeout=30) == [[3], [7]]


def test_a_map_job_runs_under_the_wrapped_tasks_time_limits(
    app: Any, worker: Any, db: psycopg.Connection[Any]
) -> None:
    worker("-c", "2")
    mapped = taskapp.soft_limited.starmap([()])
    assert (mapped.options["soft_time_limit"], mapped.options["acks_late"]) == (0.5, True)
    sent = mapped.delay()
    assert sent.get(timeout=30) == ["cleaned up"]
    # a job written by hand, without limits, still takes the wrapped task's (policy.py)
    forged = app.send_task(
        "pgqueue.starmap", kwargs={"task": "tests.taskapp.soft_limited", "it": [[]]}
    )
    assert forged.get(timeout=30) == ["cleaned up"]
