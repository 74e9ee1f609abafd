"""Remote control of jobs and workers (``app.control``), through the database."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import queries
from .db import translate_errors

if TYPE_CHECKING:
    from .app import PgQueue


class Control:
    """``app.control``: Celery's control API for what pgqueue can do through Postgres."""

    def __init__(self, app: PgQueue) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], terminate: bool = False) -> list[str]:
        """Revoke jobs: a queued, scheduled or claimed job never runs and ends REVOKED.

        A running job is left to finish unless ``terminate`` is true; then it ends REVOKED at
        once and its worker stops it (prefork: the child is killed and replaced; asyncio: the
        coroutine is cancelled; the threads and solo pools, and a sync task in the asyncio
        pool, cannot stop a running task, so its outcome is discarded instead).
        Returns the ids that were revoked; finished or unknown ids are left as they are.
        """
        ids = [task_id] if isinstance(task_id, str) else [str(t) for t in task_id]
        with translate_errors():
            rows = (
                self.app.connection()
                .execute(
                    queries.get("revoke"),
                    {
                        "ids": ids,
                        "terminate": terminate,
                        "keep_for": self.app.conf.result_expires_seconds(),
                    },
                )
                .fetchall()
            )
        return [str(r[0]) for r in rows]
