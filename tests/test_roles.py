"""Least-privilege roles (sql/roles.sql, `pgqueue roles`): each test connects as a LOGIN
user that is a member of one group role and shows what it can and cannot do.

The group roles are cluster-wide and shared by concurrent test runs: sql/roles.sql creates
them only if missing and survives a concurrent creation. The LOGIN users are this test's own
(unique names) and are dropped at its end."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors
import pytest
from click.testing import CliRunner, Result
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue import GroupResult, chain, chord, migrate, ops, queries, roles, states
from pgqueue.cli import main as cli_main
from tests import taskapp
from tests.conftest import WorkerProcess, dsn_of, wait_for

KINDS = ("owner", "producer", "worker", "operator")


def as_user(dsn: str, user: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = user
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


@dataclass
class Logins:
    """LOGIN users of this test, one per group role, on one database."""

    dsn: str  # the superuser's
    names: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def dsn_of(self, kind: str) -> str:
        return as_user(self.dsn, self.names[kind])

    def connect(self, kind: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn_of(kind), autocommit=True)

    def worker(self, db: psycopg.Connection[Any], *args: str) -> WorkerProcess:
        w = WorkerProcess(self.dsn_of("worker"), list(args), db)
        self.workers.append(w)
        return w.wait_ready()


def make_logins(
    dsn: str, prefix: str = roles.DEFAULT_PREFIX, kinds: tuple[str, ...] = KINDS
) -> Logins:
    tag = uuid.uuid4().hex[:10]
    logins = Logins(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for kind in kinds:
            name = f"pgqueue_t{tag}_{kind}"
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(name), sql.Identifier(f"{prefix}_{kind}")
                )
            )
            logins.names[kind] = name
        if "worker" in kinds:
            # what the test tasks write (tests.taskapp.record)
            conn.execute(
                sql.SQL("GRANT SELECT, INSERT ON public.test_runs TO {}").format(
                    sql.Identifier(logins.names["worker"])
                )
            )
    return logins


def drop_roles(dsn: str, names: list[str]) -> None:
    """Drop roles that may own or hold something in this database (and nowhere else)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
            (names,),
        )
        for name in names:
            role = sql.Identifier(name)
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE {}").format(role))


@pytest.fixture
def logins(dsn: str) -> Iterator[Logins]:
    """The roles of sql/roles.sql on this test's database, and a LOGIN user in each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        roles.apply(conn)
    made = make_logins(dsn)
    yield made
    for w in made.workers:
        w.close()
    drop_roles(dsn, list(made.names.values()))


@pytest.fixture
def with_outsider(logins: Logins, dsn: str) -> Logins:
    """``logins``, and one more LOGIN user, "outsider", in none of pgqueue's roles (dropped
    with the others)."""
    outsider = f"pgqueue_t{uuid.uuid4().hex[:10]}_outsider"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(outsider)))
    logins.names["outsider"] = outsider
    return logins


@pytest.fixture
def producer(logins: Logins, app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """tests.taskapp's app, connected as the producer."""
    monkeypatch.setenv("PGQUEUE_DSN", logins.dsn_of("producer"))
    app.close()
    yield app
    app.close()


def cli(dsn: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli_main, ["--dsn", dsn, *args], input=input)


def denied(conn: psycopg.Connection[Any], statement: str, *params: Any) -> bool:
    """Whether the statement is refused for lack of a privilege."""
    try:
        conn.execute(statement, params or None)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


# -- producer ---------------------------------------------------------------------------------


def test_producer_enqueues_every_way_and_reads_the_state_with_no_worker(producer, logins, db):
    one = taskapp.add.delay(1, 2)
    later = taskapp.add.apply_async((3, 4), countdown=60, expires=600, priority=5)
    # COPY for the plain calls, the enqueue statement for one with a countdown
    batch = producer.enqueue_many(
        [taskapp.add.s(i, i) for i in range(3)] + [taskapp.add.s(9, 9).set(countdown=60)]
    )
    with logins.connect("producer") as conn:
        (from_sql,) = conn.execute(
            "SELECT pgqueue.enqueue('tests.taskapp.add', '[5, 6]')::text"
        ).fetchone()
        with producer.transaction(conn):
            in_transaction = taskapp.add.delay(7, 8)
        (unique_sql,) = conn.execute(
            "SELECT pgqueue.enqueue('tests.taskapp.add', '[1, 1]', unique_key => 'u')::text"
        ).fetchone()
    # a unique key goes through pgqueue.enqueue_unique (the producer may not update jobs)
    unique = taskapp.add.apply_async((1, 1), unique_key="u")
    assert unique.id == unique_sql
    results = [one, later, *batch, producer.AsyncResult(from_sql), in_transaction, unique]
    assert [r.state for r in results] == [states.PENDING] * len(results)
    assert db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s::uuid[])", ([r.id for r in results],)
    ).fetchone() == (len(results),)


def test_producer_reads_results_of_jobs_a_worker_ran(producer, logins, db):
    ok = taskapp.add.delay(2, 3)
    bad = taskapp.fail.delay("broken")
    logins.worker(db, "-c", "2", "-P", "threads")
    assert ok.get(timeout=30) == 5  # waits on LISTEN pgqueue_results
    with pytest.raises(ValueError, match="broken"):
        bad.get(timeout=30)
    assert bad.state == states.FAILURE


def test_producer_sends_workflows_a_worker_role_carries_on(producer, logins, db):
    # the producer writes the workflow's rows; the worker role, with no rights of its own on
    # the chord counter, carries the workflow on through the results trigger
    last = chain(taskapp.add.s(1, 2), taskapp.add.s(3)).apply_async()
    done = chord([taskapp.add.s(i, i) for i in range(4)], taskapp.tsum.s()).apply_async()
    w = logins.worker(db, "-c", "2", "-P", "threads")
    assert last.get(timeout=30) == 6
    assert done.get(timeout=30) == 12
    restored = GroupResult.restore(done.parent.id, app=producer)
    assert restored is not None and restored.get(timeout=5) == [0, 2, 4, 6]
    assert "permission denied" not in w.output()
    with logins.connect("producer") as conn:
        assert denied(conn, "UPDATE pgqueue.chords SET remaining = 0")


def test_producer_hands_a_job_to_an_idle_worker(producer, logins, db):
    w = logins.worker(db, "-c", "2", "-P", "threads")
    (wid,) = db.execute("SELECT id FROM pgqueue.workers WHERE pid = %s", (w.pid,)).fetchone()
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pgqueue.worker_slots WHERE worker_id = %s AND offered", (wid,)
            ).fetchone()
            == (2,)
        ),
        what="the worker to offer its slots",
    )
    with logins.connect("producer") as conn, conn.transaction():
        handed = taskapp.record.apply_async(("handed-to-idle",), connection=conn)
        # STARTED before the commit: the insert trigger handed it to the worker
        (state,) = conn.execute(
            "SELECT state FROM pgqueue.jobs WHERE id = %s", (handed.id,)
        ).fetchone()
        assert state == states.STARTED
    assert handed.get(timeout=30)
    assert db.execute("SELECT count(*) FROM test_runs WHERE tag = 'handed-to-idle'").fetchone() == (
        1,
    )


def test_producer_cannot_change_jobs_nor_see_workers(producer, logins, db):
    job = taskapp.add.delay(1, 1)
    with logins.connect("producer") as conn:
        refused = {
            "update jobs": denied(conn, "UPDATE pgqueue.jobs SET priority = 9"),
            "delete jobs": denied(conn, "DELETE FROM pgqueue.jobs"),
            "lock jobs": denied(conn, "SELECT id FROM pgqueue.jobs FOR UPDATE"),
            "read arguments": denied(conn, "SELECT args FROM pgqueue.jobs"),
            "read slots": denied(conn, "SELECT * FROM pgqueue.worker_slots"),
            "read hand-off keys": denied(conn, "SELECT * FROM pgqueue.worker_channels"),
            "insert a claimed job": denied(
                conn,
                "INSERT INTO pgqueue.jobs (id, task_name, worker_id, state, attempt)"
                " VALUES (gen_random_uuid(), 'tests.taskapp.add', gen_random_uuid(),"
                " 'STARTED', 1)",
            ),
            "read workers": denied(conn, "SELECT * FROM pgqueue.workers"),
            "register a worker": denied(
                conn,
                "INSERT INTO pgqueue.workers (id, name, hostname, pid, queues, tasks, pool,"
                " concurrency) VALUES (gen_random_uuid(), 'w', 'h', 1, '{}', '{}', 'solo', 1)",
            ),
            "end jobs": denied(
                conn, "SELECT * FROM pgqueue.end_jobs(%s::uuid[], 'REVOKED', 'x', 'y')", [job.id]
            ),
            "write results": denied(conn, "UPDATE pgqueue.results SET state = 'SUCCESS'"),
            "delete results": denied(conn, "DELETE FROM pgqueue.results"),
            "read the ops views": denied(conn, "SELECT * FROM pgqueue.worker_status"),
            "create a table": denied(conn, "CREATE TABLE pgqueue.mine (x int)"),
        }
    assert refused == dict.fromkeys(refused, True)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        job.revoke()  # an operator's command
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        job.forget()
    with logins.connect("producer") as conn, pytest.raises(psycopg.errors.FeatureNotSupported):
        # the function that runs with the owner's rights can only fire, not be called
        conn.execute("SELECT pgqueue.notify_jobs()")
    assert db.execute(
        "SELECT priority, state FROM pgqueue.jobs WHERE id = %s", (job.id,)
    ).fetchone() == (0, states.PENDING)


# -- worker -----------------------------------------------------------------------------------


def test_worker_role_runs_jobs_and_rescues_a_killed_worker(logins, db, app, monkeypatch):
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps({"worker_rescue_interval": 0.2, "worker_reconnect_grace": 1.0}),
    )
    first = logins.worker(db, "-c", "1", "-P", "threads")
    slow = taskapp.slow_record.delay("slow-rescued", 4)
    wait_for(
        lambda: (
            db.execute("SELECT count(*) FROM test_runs WHERE tag = 'slow-rescued'").fetchone()
            == (1,)
        ),
        what="the slow job to start",
    )
    first.signal(signal.SIGKILL)
    first.proc.wait(30)
    db.execute(
        "INSERT INTO pgqueue.periodic_tasks (name, task_name, interval_seconds, args)"
        " VALUES ('tick', 'tests.record', 0.5, '[\"tick\"]')"
    )
    second = logins.worker(db, "-c", "2", "-P", "prefork", "--beat")
    # the second worker's rescue puts the job back, and runs it again
    wait_for(
        lambda: (
            db.execute("SELECT count(*) FROM test_runs WHERE tag = 'slow-rescued'").fetchone()
            == (2,)
        ),
        what="the rescued job to run again",
    )
    quick = [taskapp.add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=60) for r in quick] == [2 * i for i in range(20)]
    assert slow.get(timeout=60)["pid"] != first.pid
    assert slow.retries == 1
    wait_for(
        lambda: db.execute("SELECT count(*) FROM test_runs WHERE tag = 'tick'").fetchone()[0] >= 2,
        what="beat in the worker to send periodic ticks",
    )
    assert second.stop() == 0
    for w in (first, second):
        assert "permission denied" not in w.output()


def test_worker_role_reconnects_after_its_sessions_are_ended(logins, db, app):
    w = logins.worker(db, "-c", "1", "-P", "threads")
    r = taskapp.slow_record.delay("blip-as-worker-role", 3)
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM test_runs WHERE tag = 'blip-as-worker-role'"
            ).fetchone()
            == (1,)
        ),
        what="the task to start",
    )
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s"
        " AND application_name LIKE 'pgqueue %%'",
        (logins.names["worker"],),
    )
    wait_for(lambda: "database connection restored" in w.output(), what="the worker to reconnect")
    assert r.get(timeout=30)["pid"] == w.pid
    assert r.retries == 0
    assert db.execute(
        "SELECT count(*) FROM test_runs WHERE tag = 'blip-as-worker-role'"
    ).fetchone() == (1,)
    assert taskapp.add.delay(1, 2).get(timeout=30) == 3
    assert "permission denied" not in w.output()


def test_worker_login_may_end_its_own_earlier_session_and_see_liveness(logins, db):
    with logins.connect("worker") as old, logins.connect("worker") as new:
        pid = old.info.backend_pid
        (ended,) = new.execute(queries.get("terminate_backend"), {"pid": pid}).fetchone()
        assert ended is True
        # a session of another role it may not end
        with (
            logins.connect("producer") as other,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            new.execute(queries.get("terminate_backend"), {"pid": other.info.backend_pid})
    w = logins.worker(db, "-c", "1", "-P", "solo")
    with logins.connect("worker") as conn:
        refused = {
            "delete periodic tasks": denied(conn, "DELETE FROM pgqueue.periodic_tasks"),
            "record a migration": denied(
                conn, "INSERT INTO pgqueue.schema_migrations (version, name) VALUES (999, 'x')"
            ),
            "create a table": denied(conn, "CREATE TABLE pgqueue.mine (x int)"),
        }
        assert refused == dict.fromkeys(refused, True)
        # the liveness lock (pg_locks) of a worker of the same role, and its listener's session
        rows = conn.execute(
            "SELECT s.alive, EXISTS (SELECT 1 FROM pg_stat_get_activity(l.listener_pid))"
            "  FROM pgqueue.worker_status AS s"
            "  JOIN (SELECT DISTINCT worker_id, listener_pid FROM pgqueue.worker_slots) AS l"
            "    ON l.worker_id = s.id"
            " WHERE s.pid = %s",
            (w.pid,),
        ).fetchall()
        # VACUUM is the owner's: the worker knows not to try (it would only warn)
        (_, may_vacuum) = conn.execute(queries.get("autovacuum_setting")).fetchone()
        assert may_vacuum is False
        # the shared sample the metrics endpoint serves
        queues = conn.execute(queries.get("ops_sampled_queue_stats"), {"max_age": 0}).fetchall()
    assert rows == [(True, True)]
    assert [q[0] for q in queues] == ["default"]


# -- operator ---------------------------------------------------------------------------------


def test_operator_runs_the_command_line(logins, db, app):
    operator = logins.dsn_of("operator")
    queued = [taskapp.add.delay(i, 1) for i in range(3)]
    failed = taskapp.fail.delay("for retry")
    logins.worker(db, "-c", "1", "-P", "solo", "-Q", "default")
    with pytest.raises(ValueError):
        failed.get(timeout=30)
    for r in queued:
        r.get(timeout=30)
    parked = [taskapp.add.apply_async((i, 2), countdown=3600) for i in range(3)]

    reads = [["status"], ["workers"], ["jobs"], ["inspect", parked[0].id]]
    for args in [*reads, ["result", queued[0].id]]:
        result = cli(operator, *args)
        assert result.exit_code == 0, (args, result.output)
    assert "default" in cli(operator, "status").output
    assert "solo" in cli(operator, "workers").output

    revoked = cli(operator, "revoke", parked[0].id)
    assert revoked.exit_code == 0, revoked.output
    assert parked[0].state == states.REVOKED
    purged = cli(operator, "purge", "-y")
    assert purged.exit_code == 0, purged.output
    assert purged.output.endswith("purged 2 job(s)\n")
    retried = cli(operator, "retry", failed.id)
    assert retried.exit_code == 0, retried.output
    with pytest.raises(ValueError):
        failed.get(timeout=30)  # ran again, failed again
    assert failed.retries == 0

    edits = [
        ["beat", "add", "tick", "tests.taskapp.add", "--every", "3600", "--args", "[1, 2]"],
        ["beat", "disable", "tick"],
        ["beat", "enable", "tick"],
        ["beat", "list"],
        ["beat", "run", "tick"],
        ["beat", "remove", "tick"],
    ]
    outputs = []
    for args in edits:
        result = cli(operator, *args)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    assert db.execute("SELECT count(*) FROM pgqueue.periodic_tasks").fetchone() == (0,)
    sent = re.fullmatch(r"sent tick as job (\S+)\n", outputs[4])
    assert sent, outputs[4]
    assert app.AsyncResult(sent.group(1)).get(timeout=30) == 3


def test_only_an_operator_requeues_a_chain_step_and_its_not_run_rows_go_with_it(logins, db):
    from tests.test_canvas_retry import failed_chain_step

    step, after, flow = failed_chain_step(db)
    states_of = "SELECT task_id::text, state FROM pgqueue.results ORDER BY state"
    before = db.execute(states_of).fetchall()
    assert before == [(step, states.FAILURE), (after, states.REVOKED)]
    with logins.connect("producer") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        ops.retry_ids(conn, [step])
    assert db.execute(states_of).fetchall() == before
    with logins.connect("operator") as conn:
        assert ops.retry_ids(conn, [step]).done == [step]
    assert db.execute(states_of).fetchall() == []
    assert db.execute(
        "SELECT options -> 'workflow' FROM pgqueue.jobs WHERE id = %s", (step,)
    ).fetchone() == (flow,)


def test_operator_cannot_change_the_schema_nor_read_slots(logins, db):
    with logins.connect("operator") as conn:
        refused = {
            "create": denied(conn, "CREATE TABLE pgqueue.mine (x int)"),
            "alter": denied(conn, "ALTER TABLE pgqueue.jobs ADD COLUMN x int"),
            "drop": denied(conn, "DROP VIEW pgqueue.queue_stats"),
            "replace a function": denied(
                conn,
                "CREATE OR REPLACE FUNCTION pgqueue.notify_jobs() RETURNS trigger"
                " LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
            ),
            "record a migration": denied(
                conn, "INSERT INTO pgqueue.schema_migrations (version, name) VALUES (999, 'x')"
            ),
            "read slots": denied(conn, "SELECT * FROM pgqueue.worker_slots"),
            "read hand-off keys": denied(conn, "SELECT * FROM pgqueue.worker_channels"),
            "write workers": denied(conn, "DELETE FROM pgqueue.workers"),
            "grant on slots": denied(conn, "GRANT SELECT ON pgqueue.worker_slots TO PUBLIC"),
        }
        # on what it may use, a GRANT without the grant option only warns, granting nothing
        conn.execute("GRANT ALL ON pgqueue.jobs TO PUBLIC")
    assert refused == dict.fromkeys(refused, True)
    migrating = cli(logins.dsn_of("operator"), "migrate")
    assert migrating.exit_code == 1
    assert migrating.output.startswith("Error: permission denied for schema pgqueue: ")
    granting = cli(logins.dsn_of("operator"), "roles", "--apply")
    assert granting.exit_code == 1
    assert granting.output.startswith(
        f"Error: cannot set up the pgqueue roles as {logins.names['operator']!r}: "
    )
    assert "as a superuser" in granting.output
    assert db.execute(
        "SELECT has_table_privilege(%s, 'pgqueue.jobs', 'DELETE')", (logins.names["producer"],)
    ).fetchone() == (False,)


# -- owner and migrations ---------------------------------------------------------------------


def owners(conn: psycopg.Connection[Any]) -> list[str]:
    """The roles owning the schema and what is in it."""
    rows = conn.execute(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'pgqueue'"
        " UNION SELECT pg_get_userbyid(relowner) FROM pg_class"
        " WHERE relnamespace = 'pgqueue'::regnamespace"
        " UNION SELECT pg_get_userbyid(proowner) FROM pg_proc"
        " WHERE pronamespace = 'pgqueue'::regnamespace"
    ).fetchall()
    return sorted(r[0] for r in rows)


def migrate_up_to(dsn: str, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrate as an older pgqueue would have: only the files up to ``version``."""
    shipped = migrate.available()
    with monkeypatch.context() as m:
        m.setattr(migrate, "available", lambda: [f for f in shipped if f.version <= version])
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate.migrate(conn)


def test_owner_migrates_a_schema_the_roles_script_created(bare_postgresql):
    dsn = dsn_of(bare_postgresql)
    applied = cli(dsn, "roles", "--apply")
    assert applied.exit_code == 0, applied.output
    made = make_logins(dsn, kinds=("owner", "producer", "operator"))
    try:
        # the operator may not create the tables, the owner may
        refused = cli(made.dsn_of("operator"), "migrate")
        assert refused.exit_code == 1
        assert "permission denied for schema pgqueue" in refused.output
        assert "`pgqueue roles`" in refused.output
        result = cli(made.dsn_of("owner"), "migrate")
        assert result.exit_code == 0, result.output
        assert result.output.count("applied ") == len(migrate.available())
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert owners(conn) == ["pgqueue_owner"]
        with psycopg.connect(made.dsn_of("producer"), autocommit=True) as conn:
            (job_id,) = conn.execute("SELECT pgqueue.enqueue('tests.taskapp.add')").fetchone()
            assert job_id is not None
    finally:
        drop_roles(dsn, list(made.names.values()))


def test_migrate_grants_the_tables_a_later_migration_adds(bare_postgresql, monkeypatch):
    dsn = dsn_of(bare_postgresql)
    # a schema of before the hand-off (no worker_slots), migrated by a superuser, then the
    # roles set up on it
    migrate_up_to(dsn, 4, monkeypatch)
    with psycopg.connect(dsn, autocommit=True) as conn:
        roles.apply(conn)
        assert conn.execute("SELECT to_regclass('pgqueue.worker_slots')").fetchone() == (None,)
        assert owners(conn) == ["pgqueue_owner"]  # what the superuser made, handed over
    made = make_logins(dsn, kinds=("owner",))
    try:
        result = cli(made.dsn_of("owner"), "migrate")
        assert result.exit_code == 0, result.output
        assert "applied 0005_handoff" in result.output
        with psycopg.connect(dsn, autocommit=True) as conn:
            privileges = {
                role: conn.execute(
                    "SELECT has_table_privilege(%s, 'pgqueue.worker_slots', 'SELECT'),"
                    "       has_table_privilege(%s, 'pgqueue.worker_slots', 'UPDATE')",
                    (role, role),
                ).fetchone()
                for role in ("pgqueue_worker", "pgqueue_producer", "pgqueue_operator")
            }
            assert privileges == {
                "pgqueue_worker": (True, True),
                "pgqueue_producer": (False, False),
                "pgqueue_operator": (False, False),
            }
            assert owners(conn) == ["pgqueue_owner"]
    finally:
        drop_roles(dsn, list(made.names.values()))


def test_a_schema_of_mixed_ownership_is_migrated_by_the_caller(bare_postgresql, monkeypatch):
    """A schema a superuser migrated (its tables are the superuser's), then handed to a role
    without its tables: the superuser migrates it on as itself, not as the schema's owner,
    who could not alter those tables."""
    dsn = dsn_of(bare_postgresql)
    made = f"pgqueue_t{uuid.uuid4().hex[:10]}_app"
    migrate_up_to(dsn, 4, monkeypatch)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(made)))
        conn.execute(sql.SQL("ALTER SCHEMA pgqueue OWNER TO {}").format(sql.Identifier(made)))
    try:
        result = cli(dsn, "migrate")
        assert result.exit_code == 0, result.output
        assert f"applied {migrate.available()[-1].version:04d}" in result.output
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert owners(conn) == sorted([made, "postgres"])
    finally:
        drop_roles(dsn, [made])


def test_every_object_of_the_schema_is_named_in_the_roles_script(db):
    text = (queries.sql_dir() / roles.FILE).read_text()
    named = set(re.findall(r"\b(?:TABLE|FUNCTION) pgqueue\.(\w+)", text))
    (in_schema,) = db.execute(
        "SELECT array_agg(name) FROM ("
        " SELECT relname AS name FROM pg_class WHERE relnamespace = 'pgqueue'::regnamespace"
        "    AND relkind IN ('r', 'p', 'v', 'm', 'f')"
        " UNION SELECT proname FROM pg_proc WHERE pronamespace = 'pgqueue'::regnamespace) AS o"
    ).fetchone()
    assert set(in_schema) - named == set(), "grant these in sql/roles.sql, or list as owner's"
    assert named - set(in_schema) == set(), "sql/roles.sql names objects the schema lacks"


# -- the script itself ------------------------------------------------------------------------


def test_roles_prints_the_script_and_applying_it_again_resets_privileges(logins, dsn, db):
    printed = cli(dsn, "roles")
    assert printed.exit_code == 0
    assert printed.output == (queries.sql_dir() / roles.FILE).read_text()
    shop = cli(dsn, "roles", "--prefix", "shop")
    assert shop.output.startswith("SET pgqueue.role_prefix = 'shop';\n")
    db.execute("GRANT UPDATE, DELETE ON pgqueue.jobs TO pgqueue_producer")
    db.execute("GRANT SELECT ON pgqueue.worker_slots TO pgqueue_operator")
    again = cli(dsn, "roles", "--apply")
    assert again.exit_code == 0, again.output
    assert db.execute(
        "SELECT has_table_privilege('pgqueue_producer', 'pgqueue.jobs', 'UPDATE'),"
        "       has_table_privilege('pgqueue_producer', 'pgqueue.jobs', 'DELETE'),"
        "       has_table_privilege('pgqueue_operator', 'pgqueue.worker_slots', 'SELECT'),"
        "       has_column_privilege('pgqueue_producer', 'pgqueue.jobs', 'args', 'INSERT'),"
        "       has_column_privilege('pgqueue_producer', 'pgqueue.jobs', 'worker_id', 'INSERT')"
    ).fetchone() == (False, False, False, True, False)


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")
def test_the_printed_script_runs_in_psql_with_a_prefix(bare_postgresql):
    dsn = dsn_of(bare_postgresql)
    prefix = f"pgqueue_t{uuid.uuid4().hex[:10]}"
    printed = cli(dsn, "roles", "--prefix", prefix)
    try:
        psql = subprocess.run(
            ["psql", "-X", "-1", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", "-"],
            input=printed.output,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert psql.returncode == 0, psql.stderr
        migrated = cli(dsn, "migrate")
        assert migrated.exit_code == 0, migrated.output
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert owners(conn) == [f"{prefix}_owner"]
            assert conn.execute(
                "SELECT has_column_privilege(%s, 'pgqueue.jobs', 'args', 'INSERT'),"
                "       has_table_privilege(%s, 'pgqueue.jobs', 'UPDATE'),"
                "       has_table_privilege(%s, 'pgqueue.worker_slots', 'SELECT')",
                (f"{prefix}_producer", f"{prefix}_producer", f"{prefix}_worker"),
            ).fetchone() == (True, False, True)
    finally:
        drop_roles(dsn, [f"{prefix}_{kind}" for kind in KINDS])


def test_roles_script_survives_a_concurrent_creation_of_its_roles(dsn, db, bare_postgresql):
    """Roles are cluster-wide: a run on another database may create one between this run's
    check and its CREATE ROLE."""
    prefix = f"pgqueue_t{uuid.uuid4().hex[:10]}"
    other = dsn_of(bare_postgresql)
    created: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                created.extend(roles.apply(conn, prefix).values())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    try:
        with psycopg.connect(other, autocommit=True) as holder, holder.transaction():
            # created, not committed: the script's CREATE ROLE waits on it
            holder.execute(
                sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(f"{prefix}_worker"))
            )
            thread.start()
            wait_for(
                # (not on holder: a transaction sees pg_stat_activity as of its first look)
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = %s AND wait_event_type = 'Lock'",
                        (conninfo_to_dict(dsn)["dbname"],),
                    ).fetchone()
                    == (1,)
                ),
                what="the script to wait for the other transaction's role",
            )
        thread.join(60)
        assert errors == []
        assert sorted(created) == sorted(f"{prefix}_{k}" for k in KINDS)
    finally:
        if thread.is_alive():
            thread.join(60)
        with psycopg.connect(dsn, autocommit=True) as conn:
            existing = [
                r[0]
                for r in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (prefix + "%",)
                )
            ]
        # the test database's schema (owned by the prefix's owner) goes with the database
        drop_roles(dsn, existing)
