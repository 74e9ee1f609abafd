"""pgqueue's schema applied by ``manage.py migrate`` (the migrations of this app)."""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS

from ... import migrate
from ...db import connect
from .config import dsn_of, pgqueue_setting


def apply_schema(apps: Any, schema_editor: Any) -> None:
    """Bring pgqueue's schema up to date in the queue's database, when ``manage.py
    migrate`` migrates it (the database of PGQUEUE's ``database``, ``default`` unless set)."""
    alias = schema_editor.connection.alias
    setting = pgqueue_setting()
    home = setting.get("database", DEFAULT_DB_ALIAS)
    if alias != (home or DEFAULT_DB_ALIAS):
        return
    # The live settings of the migrated connection: under Django's test runner they name
    # the test database, which the DSN the app was built with at start-up does not.
    dsn = setting.get("dsn") or dsn_of(schema_editor.connection.settings_dict)
    with connect(dsn) as conn:
        migrate.migrate(conn)
