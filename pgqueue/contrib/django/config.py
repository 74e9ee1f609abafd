"""The PgQueue app of a Django project, built from its settings: ``PGQUEUE`` for app.conf,
the DSN from ``DATABASES``, enqueues on Django's connection, tasks modules found in the
installed apps."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ...app import PgQueue
from ...conf import DEFAULTS
from ...db import describe

# PGQUEUE's keys that are not app.conf settings.
OWN_KEYS = {
    # The queue's database, when it is not the one of `database` (or `database` is None).
    "dsn",
    # The alias in DATABASES whose connection enqueues join (and whose settings give the
    # DSN unless `dsn` is given); None to keep the queue apart from Django's transactions.
    "database",
    # Tasks (glob patterns) whose arguments the admin never shows, besides those declared
    # sensitive=True: the dashboard's --hide-args.
    "hide_args",
}

# OPTIONS of Django's PostgreSQL backend that are Django's or psycopg's, not libpq's.
_NOT_LIBPQ = {
    "assume_role",
    "context",
    "cursor_factory",
    "isolation_level",
    "pool",
    "prepare_threshold",
    "server_side_binding",
}

_app: PgQueue | None = None


def get_app() -> PgQueue:
    """The project's PgQueue app, built from the settings on first call (setting Django up
    first in a process that has not: ``pgqueue worker -A pgqueue.contrib.django:app`` with
    ``DJANGO_SETTINGS_MODULE`` set)."""
    global _app
    if _app is None:
        if not apps.ready and not apps.loading:
            if not os.environ.get("DJANGO_SETTINGS_MODULE") and not settings.configured:
                raise ImproperlyConfigured(
                    "pgqueue.contrib.django needs Django's settings: run it through "
                    "`manage.py pgqueue ...`, or set DJANGO_SETTINGS_MODULE"
                )
            django.setup()  # PgQueueConfig.ready() comes back here
        if _app is None:
            _app = build_app()
    return _app


def build_app() -> PgQueue:
    """A new PgQueue app from the settings (made the current app, as every new one is)."""
    options = dict(pgqueue_setting())
    dsn = options.pop("dsn", None)
    alias = options.pop("database", DEFAULT_DB_ALIAS)
    options.pop("hide_args", None)
    hide_args()  # the admin's; a bad value shows at start-up too
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"unknown PGQUEUE setting {', '.join(map(repr, unknown))}; PGQUEUE takes 'dsn', "
            f"'database', 'hide_args' and app.conf's settings: {', '.join(sorted(DEFAULTS))}"
        )
    if alias is not None:
        django_dsn = dsn_of(_postgresql(alias).settings_dict)
        if dsn:
            _check_same_database(dsn, django_dsn, alias)
        dsn = dsn or django_dsn
    elif not dsn:
        raise ImproperlyConfigured(
            "PGQUEUE['database'] is None (jobs kept apart from Django's databases): give the "
            "queue's database as PGQUEUE['dsn']"
        )
    main = (getattr(settings, "SETTINGS_MODULE", None) or "django").partition(".")[0]
    app = PgQueue(main, dsn=dsn, include=task_modules(), **options)
    if alias is not None:
        # Looked up at each enqueue: Django's connections are per thread.
        app.connection_provider = lambda: connections[alias]
    return app


def pgqueue_setting() -> Mapping[str, Any]:
    value = getattr(settings, "PGQUEUE", {})
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"settings.PGQUEUE must be a dict, got {type(value).__name__}: "
            "PGQUEUE = {'task_default_queue': 'default', ...}"
        )
    return value


def hide_args() -> tuple[str, ...]:
    """PGQUEUE's ``hide_args``: task names or glob patterns whose arguments are hidden."""
    value = pgqueue_setting().get("hide_args", ())
    if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
        raise ImproperlyConfigured(
            f"PGQUEUE['hide_args'] must be a list of task names or glob patterns, got "
            f"{value!r}: write 'hide_args': ['payments.*']"
        )
    return tuple(value)


def _postgresql(alias: str) -> Any:
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"PGQUEUE['database'] is {alias!r}, which DATABASES does not define: name one of "
            f"{', '.join(map(repr, settings.DATABASES))}, or None with PGQUEUE['dsn']"
        )
    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] is {wrapper.vendor}, and pgqueue needs PostgreSQL: set "
            "PGQUEUE['database'] = None and PGQUEUE['dsn'] to the queue's Postgres database"
        )
    return wrapper


def dsn_of(settings_dict: Mapping[str, Any]) -> str:
    """A libpq DSN for one entry of ``DATABASES`` (NAME, USER, PASSWORD, HOST, PORT and the
    libpq parameters among OPTIONS, such as sslmode or service)."""
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k not in _NOT_LIBPQ}
    params = {
        "dbname": settings_dict.get("NAME"),
        "user": settings_dict.get("USER"),
        "password": settings_dict.get("PASSWORD"),
        "host": settings_dict.get("HOST"),
        "port": settings_dict.get("PORT"),
        **options,
    }
    return make_conninfo(**{k: str(v) for k, v in params.items() if v not in (None, "")})


def _check_same_database(dsn: str, django_dsn: str, alias: str) -> None:
    # Jobs written on Django's connection land in Django's database: a `dsn` naming another
    # one would have workers wait on a queue nobody fills.
    ours, theirs = conninfo_to_dict(dsn), conninfo_to_dict(django_dsn)
    for key in ("host", "port", "dbname"):
        if ours.get(key) and theirs.get(key) and str(ours[key]) != str(theirs[key]):
            raise ImproperlyConfigured(
                f"PGQUEUE['dsn'] ({describe(dsn)}) names another {key} than DATABASES"
                f"[{alias!r}], whose connection enqueues join: make them the same database, "
                "or set PGQUEUE['database'] = None to keep jobs out of Django's transactions"
            )


def task_modules() -> list[str]:
    """The ``tasks`` module of every installed app that has one (imported by the worker;
    Celery's autodiscover_tasks)."""
    found = []
    for config in apps.get_app_configs():
        if not hasattr(config.module, "__path__"):
            continue  # an app that is a module, not a package, has no submodules
        name = f"{config.name}.tasks"
        if importlib.util.find_spec(name) is not None:
            found.append(name)
    return found
