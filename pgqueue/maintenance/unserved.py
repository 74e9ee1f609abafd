"""The unserved-tasks warning: jobs of a task no live worker runs are named, once per
(queue, task) per worker process. The claim skips such jobs, so nothing else says why they
wait."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import queries
from .service import Connection, Service

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.maintenance")

# The check looks at up to this many ready jobs (its cost stays flat).
UNSERVED_SAMPLE = 1000


class UnservedWarner(Service):
    name = "unserved"

    def __init__(self, app: PgQueue) -> None:
        super().__init__(float(app.conf.worker_rescue_interval))
        self._warned: set[tuple[str, str]] = set()

    def work(self, conn: Connection) -> bool:
        rows = conn.execute(
            queries.get("unserved_tasks_sample"), {"limit": UNSERVED_SAMPLE}
        ).fetchall()
        for queue, task, jobs in rows:
            if (queue, task) in self._warned:
                continue
            self._warned.add((queue, task))
            log.warning(
                "jobs of task %r wait in queue %r (at least %d) and no live worker consuming "
                "that queue has registered the task: start a worker whose app imports "
                "it (-A, include=[...]) with -Q %s, or remove them with "
                "`pgqueue purge -Q %s --task %s`",
                task,
                queue,
                jobs,
                queue,
                queue,
                task,
            )
        return False
