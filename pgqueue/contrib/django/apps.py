"""The Django app: builds the project's PgQueue app when Django starts, and keeps Django's
connections sound in worker processes."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from django.apps import AppConfig
from django.db import close_old_connections, connections

from ... import signals
from .config import get_app


class PgQueueConfig(AppConfig):
    """``INSTALLED_APPS = [..., "pgqueue.contrib.django"]``."""

    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        get_app()  # settings errors show at start-up, and the app is current from now on
        # As Django does around a request, so a task finds no connection left broken or
        # past CONN_MAX_AGE by the one before. Sent only where tasks run (a worker).
        signals.task_prerun.connect(_close_old_connections, dispatch_uid="pgqueue.django")
        signals.task_postrun.connect(_close_old_connections, dispatch_uid="pgqueue.django")
        _register_at_fork()


def _close_old_connections(**_: Any) -> None:
    close_old_connections()


_registered = False


def _register_at_fork() -> None:
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=_drop_inherited_connections)
        _registered = True


def _drop_inherited_connections() -> None:
    """In a forked child (a prefork pool's, a pre-forking web server's), let go of the
    database connections the parent had open: two processes on one session would mix
    their statements. The socket is closed in the child only, so closing the connection
    afterwards sends nothing that would end the parent's session."""
    for wrapper in connections.all(initialized_only=True):
        raw = wrapper.connection
        if raw is None:
            continue
        with contextlib.suppress(Exception):
            os.close(raw.fileno())
        with contextlib.suppress(Exception):
            wrapper.close()
