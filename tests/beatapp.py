"""The app beat processes in tests run (``-A tests.beatapp:app``).

Tests write the entries they need into pgqueue.periodic_tasks; the code declares one daily
entry so that every beat start also exercises the sync of code entries.
"""

from __future__ import annotations

from pgqueue import PgQueue, crontab

app = PgQueue("beat-tests")
app.conf.beat_schedule = {
    "beatapp-daily": {"task": "tests.beat.daily", "schedule": crontab(minute=0, hour=3)},
}
