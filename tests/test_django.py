"""The Django app, on a real project (tests/djangoproject): enqueue in ``transaction.atomic()``
on Django's own connection, settings, ``manage.py migrate`` on a bare database and
``manage.py pgqueue worker`` running a task that uses the ORM in a prefork child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgqueue.current
from pgqueue import migrate
from tests.conftest import ROOT, dsn_of, wait_for

django = pytest.importorskip("django")
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

MANAGE = ROOT / "tests" / "djangoproject" / "manage.py"
TASK = "tests.djangoproject.shop.tasks.confirm"


def _database(dsn: str) -> dict[str, str]:
    params = conninfo_to_dict(dsn)
    return {
        "NAME": str(params.get("dbname", "")),
        "USER": str(params.get("user", "")),
        "PASSWORD": str(params.get("password", "")),
        "HOST": str(params.get("host", "")),
        "PORT": str(params.get("port", "")),
    }


@pytest.fixture
def project(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The project set up in this process, its default database pointed at this test's
    (Django is set up once per process: later tests re-point it), tables migrated."""
    from django.conf import settings
    from django.db import connections

    from pgqueue.contrib.django import get_app

    before = pgqueue.current._default_app
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.djangoproject.settings")
    django.setup()
    connections.close_all()
    settings.DATABASES["default"].update(_database(dsn))
    connections["default"].settings_dict.update(_database(dsn))
    app = get_app()
    app.use_dsn(dsn)
    call_command("migrate", verbosity=0)  # pgqueue's schema is there: a no-op for it
    yield app
    connections.close_all()
    app.close()
    pgqueue.current._default_app = before


def jobs(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT task_name, queue, args FROM pgqueue.jobs ORDER BY args").fetchall()


def orders(db: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in db.execute("SELECT number FROM shop_order ORDER BY id")]


def test_a_rolled_back_atomic_block_leaves_neither_the_order_nor_the_job(project, db):
    from tests.djangoproject.shop.views import PaymentRefused

    with pytest.raises(PaymentRefused):
        Client().post("/orders", {"number": "A1", "refuse": "1"})
    assert orders(db) == [] and jobs(db) == []


def test_a_committed_atomic_block_writes_the_order_and_the_job(project, db):
    reply = Client().post("/orders", {"number": "A2"}).json()
    assert orders(db) == ["A2"]
    # PGQUEUE's task_default_queue applies
    assert jobs(db) == [(TASK, "shop", [reply["order"]])]


def test_inside_the_block_the_job_is_not_visible_before_the_commit(project, db):
    from django.db import transaction

    from tests.djangoproject.shop.tasks import confirm

    with transaction.atomic():
        confirm.delay(41)
        assert jobs(db) == []
        with transaction.atomic():  # a savepoint, rolled back alone
            confirm.delay(42)
            transaction.set_rollback(True)
    assert jobs(db) == [(TASK, "shop", [41])]


def test_outside_atomic_blocks_django_autocommits_the_job_at_once(project, db):
    reply = Client().post("/orders/autocommit", {"number": "A3"}).json()
    assert jobs(db) == [(TASK, "shop", [reply["order"]])]


def test_django_start_up_makes_the_app_current_and_lists_the_apps_tasks_modules(dsn):
    shown = _manage(
        dsn,
        "shell",
        "-c",
        "import pgqueue.current, pgqueue.contrib.django as p; "
        "print(pgqueue.current.default_app() is p.app, p.app.main, p.app.include)",
    )
    # the last line: Django 5.2's shell first says what it imported
    last = shown.stdout.splitlines()[-1] if shown.stdout else shown.stderr
    assert last.split() == ["True", "tests", "['tests.djangoproject.shop.tasks']"], last


def test_settings_errors_are_refused_naming_the_fix(project, dsn):
    from pgqueue.contrib.django.config import build_app

    with (
        override_settings(PGQUEUE={"task_default_queu": "x"}),
        pytest.raises(ImproperlyConfigured, match="unknown PGQUEUE setting 'task_default_queu'"),
    ):
        build_app()
    other = dsn.replace(str(conninfo_to_dict(dsn)["dbname"]), "elsewhere")
    with (
        override_settings(PGQUEUE={"dsn": other}),
        pytest.raises(ImproperlyConfigured, match="names another dbname"),
    ):
        build_app()
    with (
        override_settings(PGQUEUE={"database": None}),
        pytest.raises(ImproperlyConfigured, match="give the queue's database"),
    ):
        build_app()
    with (
        override_settings(PGQUEUE={"database": "reports"}),
        pytest.raises(ImproperlyConfigured, match="DATABASES does not define"),
    ):
        build_app()
    with override_settings(PGQUEUE={"database": None, "dsn": other, "task_default_priority": 3}):
        apart = build_app()
    assert apart.dsn == other and apart.connection_provider is None
    assert apart.conf.task_default_priority == 3


def test_the_dsn_comes_from_databases_with_libpq_options_only():
    from pgqueue.contrib.django.config import dsn_of as django_dsn

    found = django_dsn(
        {
            "NAME": "shop",
            "USER": "web",
            "PASSWORD": "",
            "HOST": "db.internal",
            "PORT": 6432,
            "OPTIONS": {"sslmode": "require", "server_side_binding": True, "pool": True},
        }
    )
    assert conninfo_to_dict(found) == {
        "dbname": "shop",
        "user": "web",
        "host": "db.internal",
        "port": "6432",
        "sslmode": "require",
    }


def test_manage_py_pgqueue_adds_the_project_app_and_database_to_the_command_line():
    from pgqueue.contrib.django.management.commands.pgqueue import APP_SPEC, forwarded

    assert forwarded(["worker", "-c", "2"], "dbname=x") == [
        "--dsn", "dbname=x", "worker", "-A", APP_SPEC, "-c", "2",
    ]  # fmt: skip
    assert forwarded(["--dsn", "dbname=y", "status", "-A", "m:app"], "dbname=x") == [
        "--dsn", "dbname=y", "status", "-A", "m:app",
    ]  # fmt: skip
    assert forwarded(["dev", "up"], "dbname=x") == ["--dsn", "dbname=x", "dev", "up"]
    assert forwarded(["--help"], "dbname=x") == ["--dsn", "dbname=x", "--help"]


def test_the_pgqueue_command_sets_django_up_for_the_project_app(dsn):
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pgqueue.cli", "status", "-A", "pgqueue.contrib.django:app"]
    env["DJANGO_SETTINGS_MODULE"] = "tests.djangoproject.settings"
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "no queues" in done.stdout, done.stderr
    del env["DJANGO_SETTINGS_MODULE"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "set DJANGO_SETTINGS_MODULE" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_call_command_runs_the_command_line_and_raises_its_errors_as_command_errors(
    project, capsys
):
    from django.core.management import CommandError

    call_command("pgqueue", "status")
    assert "no queues" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No such command 'wroker'"):
        call_command("pgqueue", "wroker")


def test_the_django_migrations_cover_every_sql_migration():
    from importlib import import_module

    first = import_module("pgqueue.contrib.django.migrations.0001_schema")
    shipped = sorted(Path(first.__file__).parent.glob("0*.py"))
    # the migrations that apply the schema say which SQL migration they bring it to; the
    # others (the admin's unmanaged models) run no SQL
    modules = [import_module(f"pgqueue.contrib.django.migrations.{m.stem}") for m in shipped]
    latest = max(getattr(m, "SQL_VERSION", 0) for m in modules)
    assert migrate.latest_version() == latest, (
        "a new SQL migration needs a Django migration (pgqueue/contrib/django/migrations)"
    )


def test_a_forked_child_leaves_the_parents_django_connection_working(project):
    from django.db import connection

    def server_pid() -> int:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            return int(cur.fetchone()[0])

    parent_session = server_pid()
    child = os.fork()
    if child == 0:  # the child: a session of its own, the parent's left alone
        code = 1
        try:
            code = 0 if server_pid() != parent_session else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert server_pid() == parent_session  # the parent's session was not ended


def _manage(dsn: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_manage_py_migrate_creates_pgqueues_schema_on_a_bare_database(bare_postgresql):
    dsn = dsn_of(bare_postgresql)
    bare_postgresql.autocommit = True
    for _ in range(2):  # a second run finds everything applied
        done = _manage(dsn, "migrate")
        assert done.returncode == 0, done.stderr
    versions = bare_postgresql.execute("SELECT max(version) FROM pgqueue.schema_migrations")
    assert versions.fetchone()[0] == migrate.latest_version()
    assert bare_postgresql.execute("SELECT count(*) FROM shop_order").fetchone()[0] == 0
    again = _manage(dsn, "pgqueue", "migrate")  # pgqueue's own command agrees
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr


def test_under_djangos_test_runner_the_schema_and_the_jobs_are_in_the_test_database(dsn, db):
    done = _manage(dsn, "test", "tests.djangoproject.shop", "--noinput")
    assert done.returncode == 0, done.stderr
    assert "Ran 1 test" in done.stderr and "OK" in done.stderr, done.stderr
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] == 0


def test_manage_py_pgqueue_worker_runs_the_task_with_the_orm_in_a_prefork_child(project, dsn, db):
    reply = Client().post("/orders", {"number": "W1"}).json()
    order = reply["order"]
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pgqueue-django-worker-{os.getpid()}.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, str(MANAGE), "pgqueue", "worker", "-Q", "shop", "-c", "1"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def confirmed() -> Any:
            if worker.poll() is not None:
                raise AssertionError(f"worker exited early:\n{log_path.read_text()}")
            return db.execute(
                "SELECT confirmed_by FROM shop_order WHERE id = %s", (order,)
            ).fetchone()[0]

        child_pid = wait_for(confirmed, 60, "the worker to confirm the order")
        assert child_pid != worker.pid  # run in a prefork child, where Django is set up
        assert project.AsyncResult(reply["job"]).get(timeout=30) == "W1"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log_path.unlink(missing_ok=True)
