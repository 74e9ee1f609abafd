"""Workflows (canvas): chain, group, chord, link and link_error, with real workers and a
real Postgres. SQL-level chord races are in test_canvas_sql.py."""

from __future__ import annotations

import json
import signal
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue import AsyncResult, GroupResult, chain, chord, group, states
from pgqueue.cli import main as cli_main
from pgqueue.exceptions import ChordError, TaskRevokedError
from tests import taskapp
from tests.conftest import wait_for


def runs(db: psycopg.Connection[Any], tag: str) -> int:
    row = db.execute("SELECT count(*) FROM test_runs WHERE tag = %s", (tag,)).fetchone()
    assert row is not None
    return int(row[0])


def tags_like(db: psycopg.Connection[Any], pattern: str) -> list[str]:
    rows = db.execute("SELECT tag FROM test_runs WHERE tag LIKE %s ORDER BY tag", (pattern,))
    return [r[0] for r in rows]


def test_chain_of_three_passes_values(app: Any, worker: Any) -> None:
    worker("-c", "2")
    result = chain(taskapp.add.s(1, 2), taskapp.add.s(10), taskapp.mul.s(2)).apply_async()
    assert result.get(timeout=30) == 26
    assert result.parent is not None and result.parent.get(timeout=5) == 13
    assert result.parent.parent is not None and result.parent.parent.get(timeout=5) == 3
    assert result.parent.parent.parent is None


def test_pipe_builds_a_chain_and_si_takes_no_result(app: Any, worker: Any) -> None:
    worker("-c", "2")
    result = (taskapp.add.s(1, 2) | taskapp.add.si(5, 5) | taskapp.collect.s("x")).delay()
    assert result.get(timeout=30) == [10, "x"]
    # a step's result is stored whatever ignore_result says: the next step reads it there
    quiet = chain(taskapp.add.s(1, 2).set(ignore_result=True), taskapp.add.s(1)).delay()
    assert quiet.get(timeout=30) == 4
    assert quiet.parent.get(timeout=5) == 3


def test_chain_stops_at_a_failure_and_later_steps_are_revoked(app: Any, worker: Any) -> None:
    worker("-c", "2")
    last = chain(
        taskapp.add.s(1, 2), taskapp.fail.si("boom"), taskapp.add.s(1), taskapp.add.s(2)
    ).apply_async()
    # get() on a step that will never run raises at once, instead of waiting for ever
    with pytest.raises(TaskRevokedError, match="not run: the chain stopped at"):
        last.get(timeout=30)
    third = last.parent
    failed = third.parent
    assert failed.state == states.FAILURE and isinstance(failed.result, ValueError)
    assert third.state == states.REVOKED
    assert f"tests.taskapp.fail[{failed.id}], which ended FAILURE" in str(third.result)
    assert failed.parent.get(timeout=5) == 3


def test_rolled_back_workflow_leaves_nothing(app: Any, dsn: str, db: Any) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(RuntimeError), conn.transaction():
        chain(taskapp.add.s(1, 2), taskapp.add.s(3)).apply_async(connection=conn)
        chord([taskapp.add.s(i, i) for i in range(3)], taskapp.tsum.s()).apply_async(
            connection=conn
        )
        group(taskapp.add.s(1, 1), taskapp.add.s(2, 2)).apply_async(connection=conn)
        raise RuntimeError("roll back")
    for table in ("jobs", "workflows", "workflow_members", "chords"):
        assert db.execute(f"SELECT count(*) FROM pgqueue.{table}").fetchone() == (0,), table
    # and the same calls commit with it
    with psycopg.connect(dsn) as conn, conn.transaction():
        chain(taskapp.add.s(1, 2), taskapp.add.s(3)).apply_async(connection=conn)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (1,)
    assert db.execute("SELECT kind FROM pgqueue.workflows").fetchall() == [("chain",)]


def test_group_of_100_in_order_and_restored(app: Any, worker: Any) -> None:
    worker("-c", "4")
    result = group(taskapp.add.s(i, i) for i in range(100)).apply_async()
    assert isinstance(result, GroupResult) and len(result.results) == 100
    assert result.get(timeout=60) == [2 * i for i in range(100)]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 100
    restored = GroupResult.restore(result.id, app=app)
    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.join(timeout=5) == [2 * i for i in range(100)]
    assert GroupResult.restore(taskapp.add.delay(1, 1).id, app=app) is None


def test_chord_of_200_by_four_workers_calls_back_once(app: Any, db: Any, worker: Any) -> None:
    for _ in range(4):
        worker("-c", "2")
    result = chord(
        (taskapp.add.s(i, i) for i in range(200)), taskapp.tsum.s(tag="chord-200")
    ).apply_async()
    assert result.get(timeout=120) == sum(2 * i for i in range(200))
    assert isinstance(result.parent, GroupResult) and len(result.parent.results) == 200
    assert runs(db, "chord-200") == 1
    row = db.execute(
        "SELECT size, remaining, state FROM pgqueue.chords WHERE id = %s", (result.parent.id,)
    ).fetchone()
    assert row == (200, 0, "FIRED")


def test_chord_survives_a_worker_killed_midway(
    app: Any, db: Any, worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps({"worker_reconnect_grace": 0, "worker_rescue_interval": 0.5}),
    )
    doomed = worker("-c", "4")
    worker("-c", "2")
    header = [taskapp.slow_add.s(i, i, 0.2) for i in range(60)]
    result = (group(header) | taskapp.tsum.s(tag="chord-killed")).apply_async()
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pgqueue.workflow_members WHERE counted_at IS NOT NULL"
            ).fetchone()[0]
            >= 10
        ),
        what="some members to finish",
    )
    doomed.signal(signal.SIGKILL)
    doomed.proc.wait(30)
    assert result.get(timeout=120) == sum(2 * i for i in range(60))
    assert runs(db, "chord-killed") == 1
    # the kill did catch members running: they were rescued and ran again
    assert any(r.retries >= 1 for r in result.parent.results)


def test_chord_with_a_failing_member_fails_without_calling_back(
    app: Any, db: Any, worker: Any
) -> None:
    worker("-c", "2")
    header = [taskapp.add.s(1, 1), taskapp.fail.si("bad member"), taskapp.add.s(2, 2)]
    result = chord(header, taskapp.tsum.s(tag="never")).apply_async(link_error=taskapp.errback.s())
    with pytest.raises(ChordError) as raised:
        result.get(timeout=30)
    failed = result.parent.results[1]
    assert f"tests.taskapp.fail[{failed.id}]" in str(raised.value)
    assert "bad member" in str(raised.value)
    wait_for(lambda: runs(db, f"errback:{result.id}"), what="the chord's link_error")
    assert runs(db, "never") == 0
    assert db.execute(
        "SELECT state, failed_member::text FROM pgqueue.chords WHERE id = %s",
        (result.parent.id,),
    ).fetchone() == ("FAILED", failed.id)


def test_link_and_link_error_on_a_plain_task(app: Any, db: Any, worker: Any) -> None:
    worker("-c", "2")
    after = taskapp.collect.s("after").set(task_id="00000000-0000-4000-8000-000000000001")
    r = taskapp.add.apply_async((1, 2), link=after, link_error=taskapp.errback.s())
    assert r.get(timeout=30) == 3
    assert AsyncResult(after.options["task_id"], app=app).get(timeout=30) == [3, "after"]

    bad = taskapp.fail.apply_async(
        ("oops",), link=taskapp.errback.si("not me"), link_error=taskapp.errback.s()
    )
    wait_for(lambda: runs(db, f"errback:{bad.id}"), what="the errback with the failed id")
    assert isinstance(AsyncResult(bad.id, app=app).result, ValueError)
    # an immutable errback gets its own arguments only; the link of a failed task is not run
    app.send_task("tests.taskapp.fail", ["again"], link_error=taskapp.errback.si("fixed"))
    wait_for(lambda: runs(db, "errback:fixed"), what="the immutable errback")
    assert runs(db, "errback:not me") == 0


def test_signature_methods_follow_celery(app: Any) -> None:
    sig = taskapp.add.s(2)
    assert sig.clone((1,)).args == (1, 2)  # partial args go first
    assert taskapp.add.si(1, 2).clone((9,)).args == (1, 2)  # immutable: kept
    assert taskapp.add.signature((1, 2), immutable=True).immutable
    assert sig.set(queue="q") is sig and sig.options["queue"] == "q"
    callback = taskapp.collect.s()
    assert sig.link(callback) is callback and sig.options["link"] == [callback]
    assert isinstance(sig | callback, chain)
    assert isinstance(group(sig) | callback, chord)
    with pytest.raises(NotImplementedError, match="task signatures or chains"):
        chord([group(taskapp.add.s(1, 1))], callback).apply_async()
    with pytest.raises(TypeError, match="task_id"):
        chain(sig, callback).apply_async(task_id="00000000-0000-4000-8000-000000000002")
    with pytest.raises(TypeError, match="link and link_error"):
        app.enqueue_many([taskapp.add.s(1, 2).set(link=callback)])


def test_inspect_shows_a_chain_and_a_chord(app: Any, dsn: str, worker: Any) -> None:
    def inspect(*args: str) -> Any:
        shown = CliRunner().invoke(cli_main, ["--dsn", dsn, "inspect", *args])
        assert shown.exit_code == 0, shown.output
        return shown.stdout

    worker("-c", "2")
    last = chain(taskapp.add.s(1, 2), taskapp.fail.si("stop"), taskapp.add.s(3)).apply_async()
    with pytest.raises(TaskRevokedError):
        last.get(timeout=30)
    text = inspect(last.id)
    assert "chain " in text
    lines = [line.split() for line in text.splitlines()]
    states_shown = [row[3] for row in lines if row and row[0] in ("0", "1", "2")]
    assert states_shown == ["SUCCESS", "FAILURE", "REVOKED"], text

    # a chord still waiting: its counter, and members in order
    result = chord(
        [taskapp.add.s(1, 1), taskapp.hold.si("held", "release-chord")], taskapp.collect.s()
    ).apply_async()
    wait_for(lambda: result.parent.results[0].ready(), what="the first member")
    flows = json.loads(inspect(result.parent.id, "--json"))["workflows"]
    assert [f["kind"] for f in flows] == ["chord"]
    assert flows[0]["chord"]["remaining"] == 1 and flows[0]["chord"]["size"] == 2
    assert flows[0]["chord"]["callback_id"] == result.id
    assert [m["task_id"] for m in flows[0]["members"]] == [r.id for r in result.parent.results]
    assert flows[0]["members"][0]["state"] == "SUCCESS"
    assert "1 of 2 member(s) to go" in inspect(result.id)
    app.send_task("tests.record", ["release-chord"])
    assert result.get(timeout=30) == [[2, "released"]]


def test_nested_workflows_chord_in_a_chain_and_a_group_of_chains(app: Any, worker: Any) -> None:
    worker("-c", "4")
    # a group followed by a step becomes a chord, whose callback the chain carries on from
    last = chain(
        taskapp.add.s(1, 1),
        group(taskapp.add.s(10), taskapp.mul.s(10)),
        taskapp.tsum.s(),
        taskapp.add.s(1),
    ).apply_async()
    assert last.get(timeout=60) == (2 + 10) + (2 * 10) + 1
    assert isinstance(last.parent.parent, GroupResult)
    assert last.parent.parent.parent.get(timeout=5) == 2
    # each member of a group may be a chain; its result is the chain's last
    grouped = group(chain(taskapp.add.s(i, i), taskapp.mul.s(3)) for i in range(5)).apply_async()
    assert grouped.get(timeout=60) == [6 * i for i in range(5)]
    done = chord(
        [chain(taskapp.add.s(1, 1), taskapp.mul.s(5)), taskapp.add.s(2, 2)],
        chain(taskapp.tsum.s(), taskapp.mul.s(2)),
    ).apply_async()
    assert done.get(timeout=60) == (10 + 4) * 2


def test_revoking_a_waiting_step_stops_the_chain_and_runs_its_errback(
    app: Any, db: Any, worker: Any
) -> None:
    last = chain(taskapp.add.s(1, 2), taskapp.add.s(3)).apply_async(link_error=taskapp.errback.s())
    first = last.parent
    first.revoke()
    with pytest.raises(TaskRevokedError, match="not run"):
        last.get(timeout=10)
    worker("-c", "1")
    wait_for(lambda: runs(db, f"errback:{first.id}"), what="the revoked step's errback")
    # the step that never ran has no errback of its own
    assert tags_like(db, "errback:%") == [f"errback:{first.id}"]


def test_a_long_chain_failing_first_marks_every_later_step(app: Any, worker: Any) -> None:
    steps = [taskapp.fail.si("first")] + [taskapp.add.s(1) for _ in range(150)]
    last = chain(*steps).apply_async()
    worker("-c", "1")
    with pytest.raises(TaskRevokedError, match="not run"):
        last.get(timeout=30)
