"""The chord counter at the SQL level, no worker: members ending at the same instant in
two transactions, and a member's result written twice."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import psycopg

from pgqueue import chain, chord, group, queries
from pgqueue.maintenance import ResultCleaner
from tests import taskapp
from tests.conftest import wait_for

WORKER = str(uuid.uuid4())


def claim(db: psycopg.Connection[Any], ids: list[str]) -> None:
    """Make the jobs look claimed by WORKER at attempt 1, as finish_jobs' fence wants."""
    db.execute(
        "UPDATE pgqueue.jobs SET worker_id = %s, attempt = 1, state = 'STARTED'"
        " WHERE id = ANY(%s::uuid[])",
        (WORKER, ids),
    )


def finish(conn: psycopg.Connection[Any], job_id: str, value: Any) -> None:
    """finish_jobs, the worker's own statement, for one SUCCESS."""
    outcome = [job_id, 1, "SUCCESS", json.dumps(value), None, None, None, 0.01, True]
    conn.execute(
        queries.get("finish_jobs"),
        {
            "outcomes": json.dumps([outcome]),
            "worker_id": WORKER,
            "worker_name": "test",
            "result_expires": 3600,
        },
    )


def callbacks(db: psycopg.Connection[Any], task_id: str) -> list[Any]:
    return [r[0] for r in db.execute("SELECT args FROM pgqueue.jobs WHERE id = %s", (task_id,))]


def test_last_two_members_ending_at_once_give_one_callback(app: Any, dsn: str, db: Any) -> None:
    result = chord([taskapp.add.s(1, 1), taskapp.add.s(2, 2)], taskapp.tsum.s()).apply_async()
    first, second = (r.id for r in result.parent.results)
    claim(db, [first, second])
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        finish(a, first, 2)  # a holds the chord's counter until it commits
        done = threading.Event()

        def end_second() -> None:
            finish(b, second, 4)  # waits for a's lock, then sees a's result
            b.commit()
            done.set()

        thread = threading.Thread(target=end_second)
        thread.start()
        wait_for(
            lambda: db.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            ).fetchone()[0],
            what="the second transaction to wait for the first's lock",
        )
        assert not done.is_set()
        a.commit()
        thread.join(30)
        assert done.is_set()
    assert callbacks(db, result.id) == [[[2, 4]]]
    assert db.execute(
        "SELECT remaining, state FROM pgqueue.chords WHERE id = %s", (result.parent.id,)
    ).fetchone() == (0, "FIRED")


def test_a_member_counts_once_when_its_result_is_written_again(app: Any, db: Any) -> None:
    result = chord([taskapp.add.s(1, 1), taskapp.add.s(2, 2)], taskapp.tsum.s()).apply_async()
    first = result.parent.results[0].id
    claim(db, [first])
    finish(db, first, 2)
    # the same member ends again (an operator re-ran it under its id, say)
    db.execute(
        "INSERT INTO pgqueue.jobs (id, task_name, options) SELECT task_id, task_name,"
        " jsonb_build_object('workflow', workflow) FROM pgqueue.results WHERE task_id = %s",
        (first,),
    )
    claim(db, [first])
    finish(db, first, 2)
    assert db.execute(
        "SELECT remaining FROM pgqueue.chords WHERE id = %s", (result.parent.id,)
    ).fetchone() == (1,)
    assert callbacks(db, result.id) == []


def test_an_unreadable_document_stops_its_workflow_not_the_batch(app: Any, db: Any) -> None:
    # A producer may write any options: a link that is not a job document.
    bad, good = str(uuid.uuid4()), str(uuid.uuid4())
    db.execute(
        "INSERT INTO pgqueue.jobs (id, task_name, options) VALUES"
        ' (%s, \'tests.taskapp.add\', \'{"workflow": {"link": [{"id": "nope"}]}}\'),'
        " (%s, 'tests.taskapp.add', '{}')",
        (bad, good),
    )
    claim(db, [bad, good])
    outcomes = [[i, 1, "SUCCESS", "1", None, None, None, 0.01, True] for i in (bad, good)]
    done = db.execute(
        queries.get("finish_jobs"),
        {
            "outcomes": json.dumps(outcomes),
            "worker_id": WORKER,
            "worker_name": "test",
            "result_expires": 3600,
        },
    ).fetchall()
    assert sorted(r[0] for r in done) == sorted([bad, good])
    assert db.execute("SELECT count(*) FROM pgqueue.results").fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_result_cleanup_removes_old_workflows_once_nothing_of_them_is_live(
    app: Any, db: Any
) -> None:
    running = chain(taskapp.add.s(1, 1), taskapp.add.s(2)).apply_async()
    # a chord waiting in a chain: its own members have no job yet
    waiting = chain(
        taskapp.add.s(1, 1), group(taskapp.add.s(1), taskapp.add.s(2)), taskapp.tsum.s()
    ).apply_async()
    finished = group(taskapp.add.s(1, 1), taskapp.add.s(2, 2)).apply_async()
    finished.revoke()
    db.execute("UPDATE pgqueue.workflows SET created_at = now() - interval '2 days'")
    assert ResultCleaner(app).work(db) is False
    kept = {r[0] for r in db.execute("SELECT id::text FROM pgqueue.workflows")}
    assert finished.id not in kept
    assert waiting.parent.id in kept  # the chord
    assert len(kept) == 3  # the two chains and the chord
    assert running.id
    assert db.execute(
        "SELECT count(*) FROM pgqueue.workflow_members WHERE workflow_id = %s", (finished.id,)
    ).fetchone() == (0,)
