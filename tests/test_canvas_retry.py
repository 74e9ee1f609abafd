"""`pgqueue retry` of a workflow's step: a chain resumes where it stopped, exactly once, and
what cannot resume exactly once (a chord's member, a step that never ran) is refused with
why. Real workers and a real Postgres, as tests/test_canvas.py."""

from __future__ import annotations

import html
import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.types.json import Jsonb

from pgqueue import AsyncResult, chain, chord, group, ops, states
from pgqueue.cli import main as cli_main
from pgqueue.exceptions import ChordError, TaskRevokedError
from tests import taskapp
from tests.conftest import wait_for
from tests.test_dashboard import TOKEN, _confirm, client


def cli(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(cli_main, ["--dsn", dsn, *args])


def runs(db: psycopg.Connection[Any], tag: str) -> int:
    row = db.execute("SELECT count(*) FROM test_runs WHERE tag = %s", (tag,)).fetchone()
    assert row is not None
    return int(row[0])


def open_gate(db: psycopg.Connection[Any], tag: str) -> None:
    db.execute("INSERT INTO test_runs (tag, pid) VALUES (%s, 0)", (f"open:{tag}",))


def stored(db: psycopg.Connection[Any], *ids: str) -> dict[str, str]:
    """The state of each id that has a result row (a live job's id has none)."""
    rows = db.execute(
        "SELECT task_id::text, state FROM pgqueue.results WHERE task_id = ANY(%s::uuid[])",
        (list(ids),),
    )
    return dict(rows.fetchall())


def fresh(result: AsyncResult) -> AsyncResult:
    """The result read anew: an AsyncResult keeps a finished state it has read, and a retry
    deletes that state."""
    return AsyncResult(result.id, app=taskapp.app)


def stopped_chain(tag: str) -> tuple[AsyncResult, AsyncResult, AsyncResult, AsyncResult]:
    """add(1, 2) | gate(tag) | add(1) | record(tag:tail), errback on every step; the
    results of its four steps, first to last."""
    last = chain(
        taskapp.add.s(1, 2), taskapp.gate.s(tag), taskapp.add.s(1), taskapp.record.si(f"{tag}:tail")
    ).apply_async(link_error=taskapp.errback.s())
    third = last.parent
    return third.parent.parent, third.parent, third, last


def test_retrying_a_failed_step_resumes_the_chain_with_its_result(
    app: Any, db: Any, dsn: str, worker: Any
) -> None:
    worker("-c", "2")
    first, gated, third, last = stopped_chain("b")
    with pytest.raises(TaskRevokedError, match="not run: the chain stopped at"):
        last.get(timeout=30)
    assert gated.state == states.FAILURE and third.state == states.REVOKED
    wait_for(lambda: runs(db, f"errback:{gated.id}"), what="the failed step's errback")

    # a step that never ran is not run ahead of the one it follows, even with --revoked
    early = cli(dsn, "retry", "--revoked", third.id)
    assert early.exit_code == 3
    assert f"not retried {third.id}: never ran (not run: the chain stopped at" in early.stderr
    assert "retry the step that stopped the chain" in early.stderr
    assert stored(db, third.id) == {third.id: states.REVOKED}

    open_gate(db, "b")
    retried = cli(dsn, "retry", gated.id)
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.strip() == f"retried {gated.id}"
    # as if the step had succeeded the first time: its result goes on to the next step
    assert fresh(gated).get(timeout=30) == 30
    assert fresh(third).get(timeout=30) == 31
    fresh(last).get(timeout=30)
    assert first.get(timeout=5) == 3
    assert runs(db, "b") == 2 and runs(db, "b:tail") == 1
    # the errback ran for the one failure only; nothing is left REVOKED
    assert runs(db, f"errback:{gated.id}") == 1
    assert db.execute(
        "SELECT count(*) FROM pgqueue.results WHERE state = 'REVOKED'"
    ).fetchone() == (0,)


def test_a_plain_chain_resumes_and_its_plain_steps_are_not_run_ahead(
    app: Any, db: Any, dsn: str, worker: Any
) -> None:
    # steps with no link or errback of their own: their "not run" rows carry no workflow
    worker("-c", "2")
    last = chain(taskapp.gate.s(4, "p"), taskapp.add.s(1)).apply_async()
    with pytest.raises(TaskRevokedError):
        last.get(timeout=30)
    gated = last.parent
    refused = cli(dsn, "retry", "--revoked", last.id)
    assert refused.exit_code == 3 and f"not retried {last.id}: never ran" in refused.stderr
    plan = ops.plan_retry(db, ops.ResultFilter(states=(states.REVOKED,)))
    assert plan.count == 0 and ops.retry_results(db, plan) == 0

    open_gate(db, "p")
    assert cli(dsn, "retry", gated.id).exit_code == 0
    assert fresh(last).get(timeout=30) == 41
    assert runs(db, "p") == 2


def test_a_retried_step_that_fails_again_stops_the_chain_again(
    app: Any, db: Any, dsn: str, worker: Any
) -> None:
    worker("-c", "2")
    _, gated, third, last = stopped_chain("b")
    with pytest.raises(TaskRevokedError):
        last.get(timeout=30)
    wait_for(lambda: runs(db, f"errback:{gated.id}"), what="the first errback")
    (first_stop,) = db.execute(
        "SELECT date_done FROM pgqueue.results WHERE task_id = %s", (third.id,)
    ).fetchone()

    assert cli(dsn, "retry", gated.id).exit_code == 0
    wait_for(lambda: runs(db, f"errback:{gated.id}") == 2, what="the errback run again")
    assert runs(db, "b") == 2
    assert fresh(gated).state == states.FAILURE
    # fresh "not run" rows, written by the second failure
    assert fresh(third).state == states.REVOKED and fresh(last).state == states.REVOKED
    (second_stop,) = db.execute(
        "SELECT date_done FROM pgqueue.results WHERE task_id = %s", (third.id,)
    ).fetchone()
    assert second_stop > first_stop
    assert runs(db, "b:tail") == 0

    open_gate(db, "b")
    assert cli(dsn, "retry", gated.id).exit_code == 0
    assert fresh(third).get(timeout=30) == 31
    fresh(last).get(timeout=30)
    assert runs(db, "b:tail") == 1 and runs(db, f"errback:{gated.id}") == 2


def test_two_retries_of_one_step_at_once_requeue_it_once(
    app: Any, db: Any, dsn: str, worker: Any
) -> None:
    running = worker("-c", "1")
    _, gated, third, last = stopped_chain("b")
    with pytest.raises(TaskRevokedError):
        last.get(timeout=30)
    errback_id = wait_for(
        lambda: db.execute(
            "SELECT task_id::text FROM pgqueue.results WHERE task_name = 'tests.errback'"
        ).fetchone(),
        what="the errback's result",
    )[0]
    running.stop()

    with psycopg.connect(dsn) as holder:
        # the first retry's transaction is open: the second finds the row locked
        first = ops.retry_ids(holder, [gated.id])
        assert first.done == [gated.id]
        with psycopg.connect(dsn, autocommit=True) as other:
            second = ops.retry_ids(other, [gated.id])
            assert second.done == []
            assert second.skipped == {gated.id: "is FAILURE, and being retried by another session"}
        # in the requeue's transaction: the not-run rows and the errback's result are gone
        gone = stored(holder, gated.id, third.id, last.id, errback_id)
        assert gone == {}
        holder.commit()
    with psycopg.connect(dsn, autocommit=True) as other:
        late = ops.retry_ids(other, [gated.id])
        assert late.skipped == {gated.id: "is PENDING, not finished"}
    assert db.execute(
        "SELECT count(*), min(options -> 'workflow' ->> 'chain') IS NOT NULL"
        "  FROM pgqueue.jobs WHERE id = %s",
        (gated.id,),
    ).fetchone() == (1, True)

    open_gate(db, "b")
    worker("-c", "1")
    fresh(last).get(timeout=30)
    assert fresh(third).result == 31
    assert runs(db, "b") == 2 and runs(db, "b:tail") == 1


def test_a_chord_member_is_refused_and_nothing_is_lost(
    app: Any, db: Any, dsn: str, worker: Any
) -> None:
    worker("-c", "2")
    header = [taskapp.add.s(1, 1), taskapp.fail.si("member")]
    callback = chord(header, taskapp.tsum.s(tag="never")).apply_async(
        link_error=taskapp.errback.s()
    )
    with pytest.raises(ChordError):
        callback.get(timeout=30)
    wait_for(lambda: runs(db, f"errback:{callback.id}"), what="the chord's errback")
    member = callback.parent.results[1]
    before = stored(db, member.id, callback.id)

    result = cli(dsn, "retry", member.id, callback.id)
    assert result.exit_code == 3
    assert f"not retried {member.id}: is a member of chord {callback.parent.id}" in result.stderr
    assert "send the chord again" in result.stderr
    assert f"not retried {callback.id}: is the callback of a chord that failed" in result.stderr
    assert stored(db, member.id, callback.id) == before
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)
    # a bulk retry counts and takes neither
    plan = ops.plan_retry(db, ops.ResultFilter())
    assert plan.count == 0 and ops.retry_results(db, plan) == 0
    assert runs(db, "never") == 0


def test_a_step_followed_by_a_chord_is_refused(app: Any, db: Any, dsn: str, worker: Any) -> None:
    worker("-c", "2")
    last = chain(
        taskapp.fail.si("first"), group(taskapp.add.s(1), taskapp.add.s(2)), taskapp.tsum.s()
    ).apply_async()
    with pytest.raises(ChordError):
        last.get(timeout=30)
    failed = last.parent.parent
    assert failed.state == states.FAILURE

    result = cli(dsn, "retry", failed.id)
    assert result.exit_code == 3
    assert f"not retried {failed.id}: is followed by chord {last.parent.id}" in result.stderr
    assert failed.state == states.FAILURE
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_a_document_no_producer_writes_does_not_stop_a_retry(db: Any) -> None:
    # results.workflow comes from job options, which any producer can write
    odd = [
        '"text"',
        '{"chain": {"a": 1}, "link": 5}',
        '{"chain": [{"id": "not-a-uuid"}, {"options": 3}, null, 7]}',
        '{"link_error": [{"id": "also-not"}], "chord": null}',
    ]
    ids = []
    for flow in odd:
        row = db.execute(
            "INSERT INTO pgqueue.results (task_id, task_name, queue, state, args, kwargs,"
            " date_done, workflow) VALUES (gen_random_uuid(), 't', 'q', 'FAILURE', '[1]',"
            " '{}', now(), %s::jsonb) RETURNING task_id::text",
            (flow,),
        ).fetchone()
        ids.append(row[0])
    assert sorted(ops.retry_ids(db, ids).done) == sorted(ids)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (len(odd),)


def failed_chain_step(db: psycopg.Connection[Any]) -> tuple[str, str, dict[str, Any]]:
    """A failed chain step's result, written as a worker would: (its id, the id of the step
    after it, its workflow). The results trigger marks the step after it not run."""
    step, after = str(uuid.uuid4()), str(uuid.uuid4())
    flow = {"chain": [{"id": after, "task_name": "tests.taskapp.add", "args": [1]}]}
    db.execute(
        "INSERT INTO pgqueue.results (task_id, task_name, queue, state, args, kwargs,"
        " date_done, workflow) VALUES (%s, 'tests.taskapp.add', 'default', 'FAILURE',"
        " '[1]', '{}', now(), %s)",
        (step, Jsonb(flow)),
    )
    return step, after, flow


def test_the_dashboard_retries_a_chain_step_by_the_same_path(app: Any, db: Any) -> None:
    step, after, flow = failed_chain_step(db)
    c = client(app, allow_actions=True, token=TOKEN)

    def retry(target: str) -> str:
        form = {**_confirm(c, "retry", target), "token": TOKEN}
        done = c.post("/actions/retry", data=form, headers={"Origin": "http://dash.test"})
        assert done.status_code == 200, done.text
        return html.unescape(done.text)

    assert f"job {after} not retried: never ran (not run: the chain stopped at" in retry(after)
    assert stored(db, step, after) == {step: states.FAILURE, after: states.REVOKED}
    assert f"job {step} queued again" in retry(step)
    assert stored(db, step, after) == {}
    assert db.execute(
        "SELECT options -> 'workflow' FROM pgqueue.jobs WHERE id = %s", (step,)
    ).fetchone() == (flow,)
