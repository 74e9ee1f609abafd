"""Enqueueing: transactional, bulk, validation, routing and options, all against Postgres."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import pgqueue.current
import pgqueue.producer
from pgqueue import PgQueue, states
from pgqueue.exceptions import EncodeError
from tests import taskapp
from tests.conftest import wait_for


@pytest.fixture(autouse=True)
def keep_default_app() -> Iterator[None]:
    """Each PgQueue(...) becomes the process-wide default app (Celery's current app): put the
    one before the test back, so that a later AsyncResult(id) without app= is not sent to
    an app a test made up here."""
    before = pgqueue.current._default_app
    yield
    pgqueue.current._default_app = before


def job_count(db) -> int:
    return db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0]


def test_rollback_leaves_no_job(app, dsn, db):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        result = taskapp.add.apply_async((1, 2), connection=conn)
        assert job_count(db) == 0  # not visible before commit
        conn.rollback()
    assert job_count(db) == 0
    assert result.state == states.PENDING


def test_commit_makes_the_job_exist_with_the_business_row(app, dsn, db):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.commit()
        with app.transaction(conn):
            conn.execute("INSERT INTO orders VALUES (7)")
            result = taskapp.add.delay(3, 4)
            assert job_count(db) == 0
    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 1
    row = db.execute("SELECT task_name, args FROM pgqueue.jobs WHERE id = %s", (result.id,))
    assert row.fetchone() == ("tests.taskapp.add", [3, 4])


def test_transaction_block_rolls_back_on_error(app, dsn, db):
    with psycopg.connect(dsn) as conn, pytest.raises(RuntimeError), app.transaction(conn):
        taskapp.add.delay(1, 1)
        raise RuntimeError("order failed")
    assert job_count(db) == 0


def test_cursor_is_accepted_as_connection(app, dsn, db):
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            taskapp.add.apply_async((1, 2), connection=cur)
        conn.commit()
    assert job_count(db) == 1


def test_bulk_enqueue_is_one_statement_in_the_callers_transaction(app, dsn, db):
    with psycopg.connect(dsn) as conn:
        results = app.enqueue_many(
            [taskapp.add.s(i, i) for i in range(500)] + [taskapp.send_email.s("a@b.c")],
            connection=conn,
        )
        assert job_count(db) == 0
        conn.rollback()
    assert job_count(db) == 0
    results = taskapp.add.enqueue_many([(i, 1) for i in range(300)], priority=3)
    assert len({r.id for r in results}) == 300
    rows = db.execute("SELECT args, priority FROM pgqueue.jobs ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [[i, 1] for i in range(300)]
    assert {r[1] for r in rows} == {3}


def test_non_json_argument_is_refused_naming_it_and_nothing_is_inserted(app, db):
    with pytest.raises(TypeError, match=r"keyword argument 'when'.*datetime"):
        taskapp.add.delay(1, when=dt.datetime.now())
    with pytest.raises(EncodeError, match="positional argument 1"):
        taskapp.add.delay(1, object())
    with pytest.raises(TypeError, match="positional argument 0"):
        app.enqueue_many([taskapp.add.s(1, 2), taskapp.add.s({1, 2}, 3)])
    with pytest.raises(TypeError, match="cannot be sent as JSON"):
        taskapp.add.delay(float("nan"), 1)
    with pytest.raises(EncodeError, match=r"positional argument 0.*NUL character"):
        taskapp.add.delay("a\x00b", 1)
    assert job_count(db) == 0


def test_bulk_enqueue_beyond_one_chunk_keeps_order_and_is_all_or_nothing(app, dsn, db):
    n = pgqueue.producer.ENQUEUE_CHUNK * 2 + 1
    results = taskapp.add.enqueue_many([(i, 0) for i in range(n)])
    rows = db.execute("SELECT id::text, args FROM pgqueue.jobs ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [r.id for r in results]
    assert [r[1] for r in rows] == [[i, 0] for i in range(n)]
    db.execute("TRUNCATE pgqueue.jobs")
    # jobs timed on the database's clock go in chunks of ENQUEUE_CHUNK, in order too
    results = app.enqueue_many([taskapp.add.s(i, 1).set(countdown=60) for i in range(n)])
    rows = db.execute("SELECT id::text, args FROM pgqueue.jobs ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [r.id for r in results]
    assert [r[1] for r in rows] == [[i, 1] for i in range(n)]
    db.execute("TRUNCATE pgqueue.jobs")
    # a job the database refuses at the end takes all before it with it, on pgqueue's own
    # connection (one transaction) and on the caller's autocommit one
    taken = str(uuid.uuid4())
    taskapp.add.apply_async((0, 0), task_id=taken)
    batch = [taskapp.add.s(i, 0) for i in range(n - 1)] + [taskapp.add.s(0, 0).set(task_id=taken)]
    with pytest.raises(psycopg.errors.UniqueViolation):
        app.enqueue_many(batch)
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        app.enqueue_many(batch, connection=conn)
    assert job_count(db) == 1


def test_bulk_enqueue_copies_plain_jobs_and_times_the_others_on_the_database_clock(app, db):
    # Plain jobs are streamed with COPY; a countdown or expiry is worked out by the database
    # (enqueue_jobs), in the same transaction.
    results = app.enqueue_many(
        [
            taskapp.add.s(1, 1),
            taskapp.add.s(2, 2).set(countdown=600),
            taskapp.add.s(3, 3).set(expires=60, priority=4),
            taskapp.add.s(4, 4).set(queue="q2", time_limit=5, max_retries=None),
        ]
    )
    rows = db.execute(
        "SELECT id::text, args, run_at - enqueued_at, expires_at - enqueued_at, priority, queue,"
        " time_limit, options FROM pgqueue.jobs"
    ).fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    assert [by_id[r.id][0] for r in results] == [[1, 1], [2, 2], [3, 3], [4, 4]]
    plain, later, expiring, options = (by_id[r.id] for r in results)
    assert plain[1] == dt.timedelta(0) and plain[2] is None
    assert dt.timedelta(seconds=599) < later[1] <= dt.timedelta(seconds=601)
    assert later[6] == {"scheduled": True}
    assert dt.timedelta(seconds=59) < expiring[2] <= dt.timedelta(seconds=61)
    assert expiring[3] == 4
    assert options[4:6] == ("q2", 5.0) and options[6] == {"max_retries": None}
    db.execute("TRUNCATE pgqueue.jobs")
    # a job the database refuses among the timed ones takes the copied ones with it
    taken = str(uuid.uuid4())
    taskapp.add.apply_async((0, 0), task_id=taken)
    batch = [taskapp.add.s(i, 0) for i in range(50)]
    batch.append(taskapp.add.s(0, 0).set(task_id=taken, countdown=5))
    with pytest.raises(psycopg.errors.UniqueViolation):
        app.enqueue_many(batch)
    assert job_count(db) == 1


def test_bulk_enqueue_on_a_connection_the_server_ended_retries_once_on_a_new_one(app, db):
    taskapp.add.delay(0, 0)  # opens the app's connection
    (pid,) = app.connection().execute("SELECT pg_backend_pid()").fetchone()
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(
        lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone(),
        what="the backend to end",
    )
    results = taskapp.add.enqueue_many([(i, 0) for i in range(300)])
    ids = {r[0] for r in db.execute("SELECT id::text FROM pgqueue.jobs").fetchall()}
    assert {r.id for r in results} <= ids and len(ids) == 301


def test_options_are_stored_as_columns(app, db):
    eta = dt.datetime(2030, 1, 1, 12, 0)  # naive means UTC
    r1 = taskapp.add.apply_async(
        (1, 2),
        eta=eta,
        expires=60,
        priority=9,
        queue="q1",
        max_retries=5,
        time_limit=30,
        soft_time_limit=20,
    )
    r2 = taskapp.add.apply_async((1, 2), countdown=100)
    row = db.execute(
        "SELECT run_at, expires_at - enqueued_at, priority, queue, max_retries, time_limit,"
        " soft_time_limit, state FROM pgqueue.jobs WHERE id = %s",
        (r1.id,),
    ).fetchone()
    assert row[0] == dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert dt.timedelta(seconds=59) < row[1] < dt.timedelta(seconds=62)
    assert row[2:] == (9, "q1", 5, 30.0, 20.0, "PENDING")
    delay = db.execute(
        "SELECT run_at - enqueued_at FROM pgqueue.jobs WHERE id = %s", (r2.id,)
    ).fetchone()[0]
    assert dt.timedelta(seconds=99) < delay < dt.timedelta(seconds=101)


def test_task_id_may_be_chosen_and_unknown_ids_are_pending(app):
    chosen = str(uuid.uuid4())
    assert taskapp.add.apply_async((1, 2), task_id=chosen).id == chosen
    assert app.AsyncResult(str(uuid.uuid4())).state == states.PENDING


def test_queue_precedence_call_then_route_then_task_then_default(app, db):
    app.conf.task_routes = {"tests.taskapp.*": {"queue": "routed"}}
    try:
        a = taskapp.add.delay(1, 2)
        b = taskapp.add.apply_async((1, 2), queue="explicit")
        c = app.send_task("emails.send", ["x@y.z"])  # task queue "emails", not matched by route
        d = app.send_task("unknown.task")
    finally:
        app.conf.task_routes = None
    queue_of = dict(db.execute("SELECT id::text, queue FROM pgqueue.jobs").fetchall())
    assert queue_of[a.id] == "routed"
    assert queue_of[b.id] == "explicit"
    assert queue_of[c.id] == "emails"
    assert queue_of[d.id] == "default"


def test_sql_function_enqueues_in_plain_sql(db):
    job_id = db.execute(
        "SELECT pgqueue.enqueue('tests.taskapp.add', '[1, 2]', queue => 'sql', countdown => 5)"
    ).fetchone()[0]
    row = db.execute(
        "SELECT task_name, args, queue, run_at > now() FROM pgqueue.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("tests.taskapp.add", [1, 2], "sql", True)


def test_sql_function_refuses_non_array_args(db):
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("SELECT pgqueue.enqueue('t', '{\"a\": 1}')")


def test_enqueue_without_schema_says_to_migrate(bare_postgresql):
    from tests.conftest import dsn_of

    app = PgQueue("bare", dsn=dsn_of(bare_postgresql))

    @app.task
    def nothing() -> None: ...

    try:
        with pytest.raises(Exception, match="run `pgqueue migrate`"):
            nothing.delay()
    finally:
        app.close()


def test_wrong_dsn_gives_a_clear_error():
    app = PgQueue("nowhere", dsn="postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    with pytest.raises(psycopg.OperationalError, match="cannot connect to Postgres"):
        app.send_task("x")


def test_unknown_setting_is_refused():
    app = PgQueue("conf")
    with pytest.raises(KeyError, match="task_acks_lat"):
        app.conf.task_acks_lat = True
    app.conf.update(task_default_queue="work")
    assert app.conf.task_default_queue == "work"


def test_bulk_enqueue_works_out_each_jobs_options_and_routes(app, db):
    # A function route may look at the arguments: it is asked for every job.
    app.conf.task_routes = [lambda name, args, kwargs, options: {"queue": f"q{args[0] % 2}"}]
    try:
        app.enqueue_many([taskapp.add.s(i, 0) for i in range(4)])
    finally:
        app.conf.task_routes = None
    queues = db.execute("SELECT queue FROM pgqueue.jobs ORDER BY seq").fetchall()
    assert [q for (q,) in queues] == ["q0", "q1", "q0", "q1"]
    db.execute("TRUNCATE pgqueue.jobs")
    # signatures of one batch keep their own options, however many share them
    app.enqueue_many(
        [
            taskapp.add.s(1, 1),
            taskapp.add.s(2, 2).set(priority=7, queue="hi"),
            taskapp.add.s(3, 3),
            taskapp.send_email.s("a@b.c"),
            taskapp.add.s(4, 4).set(priority=7, queue="hi"),
        ]
    )
    rows = db.execute("SELECT args, queue, priority FROM pgqueue.jobs ORDER BY seq").fetchall()
    assert rows == [
        ([1, 1], "default", 0),
        ([2, 2], "hi", 7),
        ([3, 3], "default", 0),
        (["a@b.c"], "emails", 0),
        ([4, 4], "hi", 7),
    ]


def test_job_ids_are_time_ordered_uuids(app, db):
    before = time.time_ns() // 1_000_000
    first = taskapp.add.delay(1, 1)
    batch = taskapp.add.enqueue_many([(i, 0) for i in range(3)])
    after = time.time_ns() // 1_000_000
    ids = [first.id] + [r.id for r in batch]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 4
    # the leading 48 bits are the creation time in Unix milliseconds, so ids sort by it
    millis = [uuid.UUID(i).int >> 80 for i in ids]
    assert before <= millis[0] <= min(millis[1:]) and max(millis) <= after
    # a chosen id is kept as given
    chosen = str(uuid.uuid4())
    assert taskapp.add.apply_async((1, 1), task_id=chosen).id == chosen
