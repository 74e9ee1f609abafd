"""The app beat processes in tests run (``-A tests.beatapp:app``).

Tests write the entries they need into pgqueue.periodic_tasks; the code declares one daily
entry so that every beat start also exercises the sync of code entries. A worker started
with this app runs only ``which_run``: the jobs of other entries stay queued to be counted.
"""

from __future__ import annotations

from typing import Any

from pgqueue import PgQueue, crontab

app = PgQueue("beat-tests")
app.conf.beat_schedule = {
    "beatapp-daily": {"task": "tests.beat.daily", "schedule": crontab(minute=0, hour=3)},
}


@app.task(bind=True, name="tests.beat.which_run")
def which_run(self: Any, tick: str | None = None) -> dict[str, Any]:
    """What a tick's task can tell about its run, from inside the worker."""
    return {
        "id": self.request.id,
        "request_tick": self.request.options.get("beat_tick"),
        "tick_kwarg": tick,
    }
