"""The current app: the most recently created ``PgQueue``, used by objects made without one
(Celery's ``current_app``): ``AsyncResult(id)``, a ``Signature`` with no ``app=`` and the
tasks of ``shared_task``, which every app gets (``on_every_app``).

A module of its own so that task.py and result.py can reach it without importing app.py,
which imports them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import PgQueue

_default_app: PgQueue | None = None
_apps: weakref.WeakSet[PgQueue] = weakref.WeakSet()
_hooks: list[Callable[[PgQueue], Any]] = []


def default_app() -> PgQueue:
    """The most recently created app (Celery's current_app)."""
    if _default_app is None:
        raise ConfigurationError("no PgQueue app has been created yet")
    return _default_app


def set_default_app(app: PgQueue) -> None:
    """Make ``app`` the current app; every new ``PgQueue`` does this unless told not to."""
    global _default_app
    _default_app = app


def app_created(app: PgQueue) -> None:
    """Run the ``on_every_app`` hooks for a new app (``PgQueue.__init__`` calls this)."""
    _apps.add(app)
    for hook in list(_hooks):
        hook(app)


def on_every_app(hook: Callable[[PgQueue], Any]) -> None:
    """Call ``hook`` with every app that exists now and every app created from now on."""
    _hooks.append(hook)
    for app in list(_apps):
        hook(app)
