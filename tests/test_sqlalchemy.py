"""SQLAlchemy 2 objects as ``connection=``: the job joins the Session's or Connection's
transaction (psycopg 3 and psycopg2 drivers), ``app.transaction(session)`` is a transaction
block, and a Flask-SQLAlchemy app's route enqueues in its request's session; on the async
API, the same with an AsyncSession or AsyncConnection (psycopg 3's async driver)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

sqlalchemy = pytest.importorskip("sqlalchemy")
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import URL, Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from pgqueue import chain  # noqa: E402
from tests import taskapp  # noqa: E402


def url(dsn: str, driver: str = "psycopg") -> URL:
    params = conninfo_to_dict(dsn)
    return URL.create(
        f"postgresql+{driver}",
        username=str(params.get("user", "")) or None,
        password=str(params.get("password", "")) or None,
        host=str(params.get("host", "")) or None,
        port=int(params["port"]) if params.get("port") else None,
        database=str(params["dbname"]),
    )


@pytest.fixture(params=["psycopg", "psycopg2"])
def engine(
    request: pytest.FixtureRequest, dsn: str, db: psycopg.Connection[Any]
) -> Iterator[Engine]:
    if request.param == "psycopg2":
        pytest.importorskip("psycopg2")
    db.execute("CREATE TABLE orders (id int)")
    eng = create_engine(url(dsn, request.param))
    yield eng
    eng.dispose()


def jobs(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT task_name, args FROM pgqueue.jobs ORDER BY args").fetchall()


def orders(db: psycopg.Connection[Any]) -> int:
    return db.execute("SELECT count(*) FROM orders").fetchone()[0]


def test_session_rollback_leaves_no_job(app, engine, db):
    with Session(engine) as session:
        session.execute(text("INSERT INTO orders VALUES (1)"))
        taskapp.add.apply_async((1, 2), connection=session)
        assert jobs(db) == []  # not visible before commit
        session.rollback()
    assert jobs(db) == [] and orders(db) == 0


def test_session_commit_writes_the_job_with_the_row(app, engine, db):
    with Session(engine) as session:
        # The job is the session's first statement: it begins the session's transaction.
        result = taskapp.add.apply_async((3, 4), connection=session)
        session.execute(text("INSERT INTO orders VALUES (1)"))
        session.commit()
    assert jobs(db) == [("tests.taskapp.add", [3, 4])] and orders(db) == 1
    assert result.state == "PENDING"


def test_connection_rollback_and_commit(app, engine, db):
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO orders VALUES (1)"))
        taskapp.add.apply_async((1, 1), connection=conn)
        conn.rollback()
        assert jobs(db) == [] and orders(db) == 0
        taskapp.app.enqueue_many([taskapp.add.s(2, 2), taskapp.add.s(3, 3)], connection=conn)
        conn.commit()
    assert jobs(db) == [("tests.taskapp.add", [2, 2]), ("tests.taskapp.add", [3, 3])]


def test_app_transaction_with_a_session_commits_at_the_end_and_rolls_back_on_error(app, engine, db):
    with Session(engine) as session:
        with pytest.raises(RuntimeError), app.transaction(session):
            session.execute(text("INSERT INTO orders VALUES (1)"))
            taskapp.add.delay(1, 2)
            raise RuntimeError("order failed")
        assert jobs(db) == [] and orders(db) == 0
        with app.transaction(session):
            session.execute(text("INSERT INTO orders VALUES (2)"))
            taskapp.add.delay(5, 6)
            assert jobs(db) == []
    assert jobs(db) == [("tests.taskapp.add", [5, 6])] and orders(db) == 1


def test_app_transaction_with_a_scoped_session_works_on_its_current_session(app, engine, db):
    from sqlalchemy.orm import scoped_session, sessionmaker

    scoped = scoped_session(sessionmaker(engine))
    try:
        with pytest.raises(RuntimeError), app.transaction(scoped):
            scoped.execute(text("INSERT INTO orders VALUES (1)"))
            taskapp.add.delay(1, 2)
            raise RuntimeError("order failed")
        with app.transaction(scoped):
            scoped.execute(text("INSERT INTO orders VALUES (2)"))
            taskapp.add.delay(3, 4)
    finally:
        scoped.remove()
    assert jobs(db) == [("tests.taskapp.add", [3, 4])] and orders(db) == 1


def test_app_transaction_inside_an_open_transaction_is_a_savepoint(app, engine, db):
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO orders VALUES (1)"))
        with pytest.raises(RuntimeError), app.transaction(conn):
            taskapp.add.delay(1, 2)
            raise RuntimeError("only the savepoint goes")
        assert jobs(db) == []
        conn.commit()
    # the block's job went with its savepoint; the row before it stays
    assert jobs(db) == [] and orders(db) == 1


def test_objects_that_cannot_carry_the_job_are_refused_before_anything_is_sent(app, dsn, db):
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    pg = create_engine(url(dsn))
    lite = create_engine("sqlite://")
    aeng = create_async_engine(url(dsn))
    try:
        with pytest.raises(TypeError, match="no transaction of its own"):
            taskapp.add.apply_async((1, 2), connection=pg)
        with Session(lite) as session, pytest.raises(TypeError, match="on sqlite"):
            taskapp.add.apply_async((1, 2), connection=session)
        with pytest.raises(TypeError, match="async SQLAlchemy") as info:
            taskapp.add.apply_async((1, 2), connection=AsyncSession(aeng))
        assert "await task.aapply_async(..., connection=session)" in str(info.value)
    finally:
        pg.dispose()
        lite.dispose()
    assert jobs(db) == []


# -- the async API: AsyncSession and AsyncConnection -----------------------------------------


def workflow_rows(db: psycopg.Connection[Any]) -> int:
    return int(db.execute("SELECT count(*) FROM pgqueue.workflows").fetchone()[0])


def test_async_session_rollback_leaves_nothing_and_commit_writes_it(app, dsn, db):
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    db.execute("CREATE TABLE orders (id int)")

    async def scenario() -> None:
        aeng = create_async_engine(url(dsn))
        try:
            async with AsyncSession(aeng) as session:
                await session.execute(text("INSERT INTO orders VALUES (1)"))
                await taskapp.add.aapply_async((1, 2), connection=session)
                await chain(taskapp.add.s(1, 1), taskapp.add.s(2)).aapply_async(connection=session)
                assert jobs(db) == []  # not visible before commit
                await session.rollback()
                assert jobs(db) == [] and orders(db) == 0 and workflow_rows(db) == 0

                # The job is the session's first statement: it begins the transaction.
                first = await app.asend_task(
                    "tests.taskapp.add", (3, 4), connection=session, unique_key="k"
                )
                await app.aenqueue_many([taskapp.add.s(5, 5)], connection=session)
                # a unique job's id is read back through the session too
                again = await taskapp.add.aapply_async((6, 6), connection=session, unique_key="k")
                assert again.id == first.id
                await session.execute(text("INSERT INTO orders VALUES (2)"))
                await session.commit()
        finally:
            await aeng.dispose()

    asyncio.run(scenario())
    assert jobs(db) == [("tests.taskapp.add", [3, 4]), ("tests.taskapp.add", [5, 5])]
    assert orders(db) == 1


def test_atransaction_with_an_async_session_or_connection(app, dsn, db):
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    db.execute("CREATE TABLE orders (id int)")

    async def scenario() -> None:
        aeng = create_async_engine(url(dsn))
        try:
            async with AsyncSession(aeng) as session:
                with pytest.raises(RuntimeError, match="order failed"):
                    async with app.atransaction(session):
                        await session.execute(text("INSERT INTO orders VALUES (1)"))
                        await taskapp.add.adelay(1, 2)
                        raise RuntimeError("order failed")
                assert jobs(db) == [] and orders(db) == 0
                async with app.atransaction(session):
                    await session.execute(text("INSERT INTO orders VALUES (2)"))
                    await taskapp.add.adelay(5, 6)
                    assert jobs(db) == []
            assert jobs(db) == [("tests.taskapp.add", [5, 6])] and orders(db) == 1

            async with aeng.connect() as conn:
                await conn.execute(text("INSERT INTO orders VALUES (3)"))
                with pytest.raises(RuntimeError):
                    async with app.atransaction(conn):  # a savepoint: a transaction is open
                        await taskapp.add.adelay(7, 7)
                        raise RuntimeError("only the savepoint goes")
                await taskapp.add.aapply_async((8, 8), connection=conn)
                await conn.commit()
        finally:
            await aeng.dispose()

    asyncio.run(scenario())
    assert jobs(db) == [("tests.taskapp.add", [5, 6]), ("tests.taskapp.add", [8, 8])]
    assert orders(db) == 2


def test_async_api_refuses_sqlalchemy_objects_that_cannot_carry_the_job(app, dsn, db):
    from sqlalchemy.ext.asyncio import create_async_engine

    async def scenario() -> list[str]:
        pg = create_engine(url(dsn))
        aeng = create_async_engine(url(dsn))
        errors = []
        try:
            with Session(pg) as session:
                for call in (
                    lambda: taskapp.add.aapply_async((1, 2), connection=session),
                    lambda: app.atransaction(session).__aenter__(),
                ):
                    with pytest.raises(TypeError) as info:
                        await call()
                    errors.append(str(info.value))
            with pytest.raises(TypeError, match="no transaction of its own"):
                await taskapp.add.aapply_async((1, 2), connection=aeng)
        finally:
            pg.dispose()
            await aeng.dispose()
        return errors

    for message in asyncio.run(scenario()):
        assert "a blocking SQLAlchemy object, which the async producer cannot use" in message
        assert "task.apply_async(..., connection=session)" in message
    assert jobs(db) == []


def test_flask_sqlalchemy_route_enqueues_in_the_request_session(app, dsn, db, monkeypatch):
    flask = pytest.importorskip("flask")
    flask_sqlalchemy = pytest.importorskip("flask_sqlalchemy")
    db.execute("CREATE TABLE orders (id int)")
    web = flask.Flask(__name__)
    web.config["SQLALCHEMY_DATABASE_URI"] = url(dsn).render_as_string(hide_password=False)
    orm = flask_sqlalchemy.SQLAlchemy(web)
    # Enqueues in a request join its session with no connection= (docs/how-to/sqlalchemy.md).
    monkeypatch.setattr(
        taskapp.app,
        "connection_provider",
        lambda: orm.session if flask.has_app_context() else None,
    )

    @web.post("/orders/<int:order_id>")
    def create(order_id: int) -> str:
        orm.session.execute(text("INSERT INTO orders VALUES (:id)"), {"id": order_id})
        taskapp.add.delay(order_id, 0)
        if flask.request.args.get("fail"):
            raise RuntimeError("payment refused")
        orm.session.commit()
        return "ok"

    web.config["PROPAGATE_EXCEPTIONS"] = False
    client = web.test_client()
    assert client.post("/orders/1?fail=1").status_code == 500
    assert jobs(db) == [] and orders(db) == 0  # the session's teardown rolled both back
    assert client.post("/orders/2").status_code == 200
    assert jobs(db) == [("tests.taskapp.add", [2, 0])] and orders(db) == 1
    with web.app_context():
        orm.engine.dispose()
