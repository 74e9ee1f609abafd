"""The one module that owns pgqueue's SQL.

Statements live in ``sql/queries.sql`` under ``-- name: ...`` headers and are loaded once;
the rest of the package asks for them by name. Migrations live in ``sql/migrations``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import psycopg


def sql_dir() -> Path:
    """Where the SQL files are: inside the installed package, or beside it in a checkout."""
    packaged = Path(__file__).resolve().parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load(file: str) -> dict[str, str]:
    text = (sql_dir() / file).read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=False):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


def get(name: str, file: str = "queries.sql") -> str:
    """The SQL text of the statement called ``name`` (in ``sql/queries.sql``, or in another
    file of ``sql/`` written the same way, such as ``roles.sql``)."""
    return _load(file)[name]


def one(cursor: psycopg.Cursor[Any]) -> Any:
    """The row of a statement that always returns exactly one (an aggregate, ``now()``,
    ``EXISTS``): ``queries.one(conn.execute(queries.get("ops_now")))``."""
    row = cursor.fetchone()
    if row is None:
        raise psycopg.ProgrammingError("a statement that returns one row returned none")
    return row
