"""Celery's entry points on pgqueue: the settings table, shared_task, config_from_object,
autodiscover_tasks, Celery's constructor arguments, check-celery-config, and a Celery-style
project (tests/celeryproject) run unmodified but for its imports on a real worker."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import PgQueue, celery_settings, config, shared_task
from pgqueue.conf import DEFAULTS, is_setting
from pgqueue.current import default_app, set_default_app
from pgqueue.exceptions import ConfigurationError, IgnoredSettingWarning

from .conftest import ROOT, CliProcess

MIGRATION_GUIDE = (ROOT / "docs" / "how-to" / "celery.md").read_text()


def test_every_celery_setting_is_in_the_table() -> None:
    defaults = pytest.importorskip("celery.app.defaults")
    missing = sorted(set(defaults.DEFAULTS) - set(celery_settings.CELERY_SETTINGS))
    assert missing == []


def test_celery_old_names_map_as_celery_maps_them() -> None:
    defaults = pytest.importorskip("celery.app.defaults")
    wrong = {
        old: (celery_settings.new_name(old, is_setting), new)
        for old, new in defaults._TO_NEW_KEY.items()
        if celery_settings.new_name(old, is_setting) != new
    }
    assert wrong == {}


def test_supported_settings_name_pgqueue_settings() -> None:
    for name, setting in celery_settings.CELERY_SETTINGS.items():
        if setting.status == "supported":
            assert (setting.target or name) in DEFAULTS, name


def test_the_migration_guide_holds_the_settings_table_of_the_code() -> None:
    assert celery_settings.table_markdown() in MIGRATION_GUIDE


def test_supported_setting_is_set_and_old_names_are_understood() -> None:
    app = PgQueue("t", include=["x"], CELERYD_CONCURRENCY=3)
    app.conf.update(CELERY_ROUTES={"a.*": "q"}, include=["y"])
    assert app.conf.worker_concurrency == 3
    assert app.conf.task_routes == {"a.*": "q"}
    assert app.conf.imports == ["y"]


def test_ignored_setting_warns_once_and_reads_back() -> None:
    app = PgQueue("t")
    celery_settings._warned.discard("worker_state_db")
    with pytest.warns(IgnoredSettingWarning, match="worker_state_db"):
        app.conf.worker_state_db = "/tmp/state"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.conf.worker_state_db = "/tmp/other"  # no second warning
    assert app.conf.worker_state_db == "/tmp/other"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("task_serializer", "pickle"),
        ("accept_content", ["json", "pickle"]),
        ("task_always_eager", True),
        ("beat_scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
    ],
)
def test_refused_setting_raises_naming_the_fix(name: str, value: Any) -> None:
    app = PgQueue("t")
    with pytest.raises(ConfigurationError, match=f"{name}=.*refused"):
        app.conf.update({name: value})


def test_harmless_values_of_refused_settings_pass_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app = PgQueue("t", task_serializer="json", accept_content=["json"], task_always_eager=False)
    assert "task_serializer" in app.conf.ignored


def test_unknown_name_is_still_refused() -> None:
    with pytest.raises(KeyError, match="task_rotes"):
        PgQueue("t", task_rotes={})


def test_broker_and_backend_give_one_warning() -> None:
    with pytest.warns(IgnoredSettingWarning) as caught:
        PgQueue("t", broker="redis://", backend="redis://")
    assert len(caught) == 1
    assert "PostgreSQL" in str(caught[0].message)


def test_celery_is_pgqueue() -> None:
    assert pgqueue.Celery is PgQueue


class Config:
    CELERY_TASK_DEFAULT_QUEUE = "from-class"
    CELERY_TASK_ROUTES = {"a": "b"}
    TASK_DEFAULT_PRIORITY = 9  # no prefix: not read under the namespace
    DEBUG = True


def test_config_from_object_with_namespace_reads_prefixed_names_only() -> None:
    app = PgQueue("t")
    app.config_from_object(Config, namespace="CELERY")
    assert app.conf.task_default_queue == "from-class"
    assert app.conf.task_routes == {"a": "b"}
    assert app.conf.task_default_priority == 0


def test_config_from_object_by_dotted_name_and_attribute() -> None:
    app = PgQueue("t")
    app.config_from_object("tests.test_celery_compat:Config", namespace="CELERY")
    assert app.conf.task_default_queue == "from-class"
    app.config_from_object({"task_default_queue": "from-dict", "imports": ["m"]})
    assert app.conf.task_default_queue == "from-dict"
    with pytest.raises(ConfigurationError, match="no_such_module"):
        app.config_from_object("tests.no_such_module")


def test_shared_task_joins_apps_made_before_and_after_and_follows_the_current() -> None:
    before = PgQueue("before")

    @shared_task(name="compat.double")
    def double(x: int) -> int:
        return 2 * x

    after = PgQueue("after")
    assert "compat.double" in before.tasks and "compat.double" in after.tasks
    assert double(4) == 8
    assert double.app is after  # the current app's task
    set_default_app(before)
    try:
        assert double.app is before
        assert double.s(1).app is before
    finally:
        set_default_app(after)


def test_shared_task_without_arguments_takes_the_function_name() -> None:
    @shared_task
    def plain() -> str:
        return "ok"

    assert (
        plain.name
        == f"{__name__}.test_shared_task_without_arguments_takes_the_function_name.<locals>.plain"
    )
    assert default_app().tasks[plain.name]() == "ok"


def test_autodiscover_imports_tasks_modules_and_skips_packages_without() -> None:
    found = config.discover_tasks(
        lambda: ["tests.celeryproject.billing", "tests.celeryproject.nothing"]
    )
    assert found == ["tests.celeryproject.billing.tasks"]
    with pytest.raises(ConfigurationError, match="no_such_package"):
        config.discover_tasks(["tests.no_such_package"])


def test_autodiscover_is_lazy_until_the_worker_imports_tasks() -> None:
    app = PgQueue("lazy")
    app.autodiscover_tasks(["tests.no_such_package"])  # not imported yet: no error
    with pytest.raises(ConfigurationError, match="no_such_package"):
        app.import_task_modules()


# -- the Celery-style project ------------------------------------------------------------


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", "check-celery-config", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_celery_config_reports_ignored_settings_and_passes() -> None:
    done = _check("tests.celeryproject.celeryconfig", "--namespace", "CELERY")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "broker_url",
        "result_backend",
        "worker_send_task_events",
    ]
    assert "PostgreSQL" in lines[0]


def test_check_celery_config_fails_on_refused_settings() -> None:
    done = _check("tests.celeryproject.legacyconfig")
    assert done.returncode == 1
    out = done.stdout
    assert "task_serializer: refused" in out and "accept_content: refused" in out
    assert "broker_url: ignored" in out
    assert "CELERY_TYPO_SETTING: unknown" in out
    assert "worker_concurrency" not in out and "task_routes" not in out


def test_check_celery_config_on_an_app_module() -> None:
    done = _check("tests.celeryproject.celery:app")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broker_url: ignored" in done.stdout


class ProjectWorker(CliProcess):
    kind = "celeryproject"

    def wait_ready(self) -> None:
        def registered() -> bool:
            row = self.db.execute(
                "SELECT 1 FROM pgqueue.workers WHERE pid = %s", (self.pid,)
            ).fetchone()
            return row is not None

        self._wait_until(registered, 60, "the project's worker to register")


def test_celery_style_project_runs_on_a_real_worker(dsn: str, db: psycopg.Connection[Any]) -> None:
    with pytest.warns(IgnoredSettingWarning):
        project = importlib.reload(importlib.import_module("tests.celeryproject.celery"))
    app = project.app
    assert app.conf.task_routes == {"tests.celeryproject.orders.tasks.*": {"queue": "orders"}}
    assert app.conf.timezone == "Europe/Berlin"
    assert set(app.conf.ignored) >= {"broker_url", "result_backend"}
    orders = importlib.import_module("tests.celeryproject.orders.tasks")
    billing = importlib.import_module("tests.celeryproject.billing.tasks")
    previous = default_app()
    set_default_app(app)  # other tests' apps came later; the project's app is its own
    worker = ProjectWorker(
        dsn,
        db,
        ["worker", "-A", "tests.celeryproject.celery:app", "-Q", "orders,default", "-c", "2"],
    )
    try:
        worker.wait_ready()
        placed = orders.place.delay(7, fail_times=2)
        summed = billing.total.delay([1, 2, 3])
        refunded = app.send_task("billing.refund", [7])
        assert placed.get(timeout=60) == {"order": 7, "retries": 2, "queue": "orders"}
        assert summed.get(timeout=60) == 6
        assert refunded.get(timeout=60) == "refunded 7"
        assert worker.stop() == 0
    finally:
        worker.close()
        app.close()
        set_default_app(previous)
