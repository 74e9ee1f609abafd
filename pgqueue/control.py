"""Remote control of jobs and workers (``app.control``), through the database."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import queries, queue_controls
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

    def pause_queue(self, queue: str) -> bool:
        """Pause ``queue`` for every worker: nothing more is claimed from it, running jobs
        finish, enqueueing goes on. True if it was running. (Celery's ``cancel_consumer``
        acts on workers one by one; this is the queue's state, kept in the database.)"""
        return queue_controls.pause_queue(self.app.connection(), queue)

    def resume_queue(self, queue: str) -> bool:
        """Resume a paused ``queue``; idle workers are woken and claim at once. True if it
        was paused."""
        return queue_controls.resume_queue(self.app.connection(), queue)

    def set_queue_limits(
        self,
        queue: str,
        *,
        concurrency_limit: int | None = None,
        rate_limit: str | float | None = None,
    ) -> bool:
        """Limit ``queue`` for every worker: at most ``concurrency_limit`` of its jobs running
        at once, at most ``rate_limit`` starts ("10/s", "100/m", "1000/h"); None clears a
        limit. True if they changed. (Tasks with limits of their own follow those.)"""
        return queue_controls.set_queue_limits(
            self.app.connection(),
            queue,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
        )

    def paused_queues(self) -> list[str]:
        """The names of the paused queues."""
        return queue_controls.paused_queues(self.app.connection())
