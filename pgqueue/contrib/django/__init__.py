"""pgqueue in a Django project: add ``"pgqueue.contrib.django"`` to ``INSTALLED_APPS``.

Settings go in ``PGQUEUE = {...}`` (``app.conf``'s names, plus ``dsn`` and ``database``);
the app is built from them when Django starts and becomes the current app. Tasks modules
take it from here::

    from pgqueue.contrib.django import app

    @app.task
    def send_receipt(order_id): ...

Enqueues with no ``connection=`` go through Django's connection, so inside
``transaction.atomic()`` the job commits or rolls back with the block. ``manage.py migrate``
creates pgqueue's schema; ``manage.py pgqueue worker`` runs a worker. See docs/how-to/django.md.
"""

from __future__ import annotations

from ...app import PgQueue
from .config import get_app

__all__ = ["app", "get_app"]


def __getattr__(name: str) -> PgQueue:
    # ``app`` is built on first use, not at import: building reads Django's settings, which
    # may not be configured yet when this package is imported.
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
