"""The Django admin of pgqueue's tables (pgqueue/contrib/django/admin.py), on the project in
tests/djangoproject with a real superuser: the lists and detail pages, sensitive arguments
hidden, nothing writable, actions done by pgqueue's library; and the project without
django.contrib.admin."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

from pgqueue import beat
from pgqueue.beat import PeriodicEntry
from pgqueue.schedules import Schedule
from tests.conftest import ROOT
from tests.dashboard_seed import seed
from tests.test_django import MANAGE
from tests.test_django import project as project  # the fixture

django = pytest.importorskip("django")
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

ADMIN = "/admin/pgqueue"
CARD = "4111111111111111"


@pytest.fixture
def admin(project: Any) -> Client:
    """A client logged in as a real superuser of the test database."""
    from django.contrib.auth.models import User

    user = User.objects.create_superuser("root", "root@example.com", "not-used")
    client = Client()
    client.force_login(user)
    return client


def _periodic(project: Any, name: str) -> None:
    with project.connect() as conn:
        beat.add_entry(
            conn,
            PeriodicEntry(name=name, task="shop.report", schedule=Schedule(cron="*/5 * * * *")),
        )
        conn.commit()


def _page(client: Client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.content.decode()


def test_the_lists_show_jobs_results_and_periodic_tasks(project, admin, db):
    from tests.djangoproject.shop.tasks import confirm

    job = confirm.delay(7).id
    made = seed(db)
    _periodic(project, "nightly-report")
    jobs = _page(admin, f"{ADMIN}/job/")
    assert job in jobs and "tests.djangoproject.shop.tasks.confirm" in jobs
    assert made.one("STARTED") in jobs and made.one("FAILURE") not in jobs
    results = _page(admin, f"{ADMIN}/result/")
    assert made.one("FAILURE") in results and made.one("SUCCESS") in results
    assert "nightly-report" in _page(admin, f"{ADMIN}/periodictask/")
    assert "*/5 * * * * (UTC)" in _page(admin, f"{ADMIN}/periodictask/")
    # filtered by state, searched by id
    failed = _page(admin, f"{ADMIN}/result/?state__exact=FAILURE")
    assert made.one("FAILURE") in failed and made.one("SUCCESS") not in failed
    found = _page(admin, f"{ADMIN}/job/?q={job}")
    assert job in found and made.one("STARTED") not in found


def test_the_detail_pages_show_arguments_and_tracebacks_but_not_sensitive_arguments(
    project, admin, db
):
    from pgqueue.contrib.django.config import build_app
    from tests.djangoproject.shop.tasks import charge, confirm

    plain = _page(admin, f"{ADMIN}/job/{confirm.delay(4242).id}/change/")
    assert "4242" in plain
    charged = _page(admin, f"{ADMIN}/job/{charge.delay(CARD, 10).id}/change/")
    # declared @app.task(sensitive=True): hidden, as the dashboard hides it
    assert CARD not in charged and "hidden: this task is marked sensitive" in charged
    assert "tests.djangoproject.shop.tasks.charge" in charged
    made = seed(db)
    failed = _page(admin, f"{ADMIN}/result/{made.one('FAILURE')}/change/")
    assert "ValueError: boom" in failed and "[\n  1,\n  2\n]" in failed
    succeeded = _page(admin, f"{ADMIN}/result/{made.one('SUCCESS')}/change/")
    assert "&lt;b&gt;bold&lt;/b&gt;" in succeeded and "<b>bold</b>" not in succeeded
    # PGQUEUE's hide_args patterns, as the dashboard's --hide-args
    with override_settings(PGQUEUE={"task_default_queue": "shop", "hide_args": ["tests.*"]}):
        hidden = _page(admin, f"{ADMIN}/result/{made.one('FAILURE')}/change/")
    assert "[\n  1,\n  2\n]" not in hidden and "hidden: this task is marked sensitive" in hidden
    with (
        override_settings(PGQUEUE={"hide_args": "tests.*"}),
        pytest.raises(ImproperlyConfigured, match="must be a list of task names"),
    ):
        build_app()  # a bad value is refused at start-up, naming the fix


def test_nothing_can_be_added_changed_or_deleted(project, admin, db):
    from tests.djangoproject.shop.tasks import confirm

    job = confirm.delay(5).id
    assert admin.get(f"{ADMIN}/job/add/").status_code == 403
    assert admin.get(f"{ADMIN}/job/{job}/delete/").status_code == 403
    assert admin.post(f"{ADMIN}/job/{job}/change/", {"queue": "other"}).status_code == 403
    changelist = _page(admin, f"{ADMIN}/job/")
    assert "delete_selected" not in changelist and f"{ADMIN}/job/add/" not in changelist
    assert db.execute("SELECT queue FROM pgqueue.jobs WHERE id = %s", (job,)).fetchone() == (
        "shop",
    )


def _act(client: Client, model: str, action: str, ids: list[str]) -> str:
    response = client.post(
        f"{ADMIN}/{model}/", {"action": action, "_selected_action": ids}, follow=True
    )
    assert response.status_code == 200
    return response.content.decode()


def state(db: psycopg.Connection[Any], job_id: str) -> str | None:
    row = db.execute(
        "SELECT state FROM pgqueue.jobs WHERE id = %(id)s"
        " UNION ALL SELECT state FROM pgqueue.results WHERE task_id = %(id)s",
        {"id": job_id},
    ).fetchone()
    return row[0] if row else None


def test_the_actions_revoke_retry_and_switch_through_the_library(project, admin, db):
    made = seed(db)
    pending, failed, succeeded = made.one("PENDING"), made.one("FAILURE"), made.one("SUCCESS")
    said = _act(admin, "job", "revoke", [pending])
    assert "Revoked: 1" in said and state(db, pending) == "REVOKED"
    said = _act(admin, "result", "retry", [failed, succeeded])
    assert "Queued again: 1" in said and f"Skipped {succeeded}: is SUCCESS" in said
    assert state(db, failed) == "PENDING" and state(db, succeeded) == "SUCCESS"
    _periodic(project, "nightly-report")
    enabled = "SELECT enabled FROM pgqueue.periodic_tasks WHERE name = 'nightly-report'"
    assert "Disabled: 1" in _act(admin, "periodictask", "disable", ["nightly-report"])
    assert db.execute(enabled).fetchone() == (False,)
    assert "Enabled: 1" in _act(admin, "periodictask", "enable", ["nightly-report"])
    assert db.execute(enabled).fetchone() == (True,)


def test_a_staff_user_without_the_change_permission_may_look_but_not_act(project, db):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.force_login(user)
    made = seed(db)
    assert made.one("PENDING") in _page(client, f"{ADMIN}/job/")
    _act(client, "job", "revoke", [made.one("PENDING")])
    assert state(db, made.one("PENDING")) == "PENDING"


def test_makemigrations_wants_nothing_and_the_models_migration_runs_no_sql(project, capsys):
    call_command("check")  # the admin's own checks (list_filter, fields...) pass
    call_command("makemigrations", check=True, dry_run=True)  # exits 1 on a change
    assert "No changes detected" in capsys.readouterr().out
    call_command("sqlmigrate", "pgqueue", "0005_admin_models")
    shown = capsys.readouterr().out
    assert "Create model Job" in shown and "CREATE" not in shown.upper().replace("CREATE MODEL", "")


def test_without_the_admin_installed_the_app_works_and_registers_no_admin(dsn, db):
    env = {
        **os.environ,
        "PGQUEUE_DSN": dsn,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.djangoproject.settings_without_admin",
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate")
    manage("makemigrations", "--check", "--dry-run")
    shown = manage(
        "shell",
        "-c",
        "import sys; from tests.djangoproject.shop.tasks import confirm; "
        "print(confirm.delay(3).id, 'pgqueue.contrib.django.admin' in sys.modules)",
    )
    job, registered = shown.splitlines()[-1].split()
    assert registered == "False"
    assert db.execute("SELECT args FROM pgqueue.jobs WHERE id = %s", (uuid.UUID(job),)).fetchone()[
        0
    ] == [3]


def test_a_web_process_that_never_imported_the_tasks_still_hides_sensitive_arguments(dsn, db):
    # As in a web server: the tasks modules are imported by workers, not by the admin's
    # process, which must still know charge() as sensitive=True.
    job = db.execute(
        "SELECT pgqueue.enqueue('tests.djangoproject.shop.tasks.charge', %s::jsonb)",
        (f'["{CARD}", 10]',),
    ).fetchone()[0]
    # The admin alone in the URLconf: the project's views import the tasks.
    script = (
        "import sys, types\n"
        "from django.contrib import admin; from django.contrib.auth.models import User\n"
        "from django.test import Client, override_settings; from django.urls import path\n"
        "urls = types.ModuleType('admin_urls'); sys.modules['admin_urls'] = urls\n"
        "urls.urlpatterns = [path('admin/', admin.site.urls)]\n"
        "c = Client(); c.force_login(User.objects.create_superuser('root'))\n"
        "before = 'tests.djangoproject.shop.tasks' in sys.modules\n"
        "with override_settings(ROOT_URLCONF='admin_urls'):\n"
        f"    page = c.get('{ADMIN}/job/{job}/change/')\n"
        f"print(before, page.status_code, '{CARD}' in page.content.decode(),\n"
        "      'hidden: this task is marked sensitive' in page.content.decode())\n"
    )
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for args in (["migrate"], ["shell", "-c", script]):
        done = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["False", "200", "False", "True"], done.stdout
