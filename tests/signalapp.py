"""The test app with signal receivers that record into the database, for a prefork worker
(``-A tests.signalapp:app``): task signals fire in the child running the task, so only the
database can tell the test what they saw, and from which process."""

from __future__ import annotations

import os
from typing import Any

from pgqueue import signals
from tests import taskapp
from tests.taskapp import app

__all__ = ["app"]


def _recorder(name: str) -> Any:
    def receiver(sender: Any = None, **kwargs: Any) -> None:
        # task_success carries no id: as in Celery, the sender's current request has it.
        request = kwargs.get("request") or getattr(sender, "request", None)
        task_id = kwargs.get("task_id") or getattr(request, "id", None)
        taskapp.db().execute(
            "INSERT INTO test_runs (tag, pid) VALUES (%s, %s)",
            (f"signal:{name}:{task_id}", os.getpid()),
        )

    receiver.__name__ = f"record_{name}"
    return receiver


_receivers = {
    name: _recorder(name)
    for name in ("task_prerun", "task_postrun", "task_success", "task_failure", "task_retry")
}
for _name, _receiver in _receivers.items():
    getattr(signals, _name).connect(_receiver)
