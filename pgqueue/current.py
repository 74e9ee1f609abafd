"""The current app: the most recently created ``PgQueue``, used by objects made without one
(Celery's ``current_app``): ``AsyncResult(id)`` and a ``Signature`` with no ``app=``.

A module of its own so that task.py and result.py can reach it without importing app.py,
which imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import PgQueue

_default_app: PgQueue | None = None


def default_app() -> PgQueue:
    """The most recently created app (Celery's current_app)."""
    if _default_app is None:
        raise ConfigurationError("no PgQueue app has been created yet")
    return _default_app


def set_default_app(app: PgQueue) -> None:
    """Make ``app`` the current app; every new ``PgQueue`` does this."""
    global _default_app
    _default_app = app
