"""Periodic tasks, declared in code the Celery way and run by a worker with an embedded beat.

From this directory, with PGQUEUE_DSN pointing at a database::

    pgqueue migrate
    pgqueue worker --beat -A tasks:app -c 2

The worker's beat writes the schedule below into ``pgqueue.periodic_tasks`` and sends each
tick once, however many ``--beat`` workers or ``pgqueue beat`` processes run. While they run,
``pgqueue beat list`` shows the table and ``pgqueue beat disable heartbeat`` pauses an entry.
"""

from __future__ import annotations

from pgqueue import PgQueue, crontab

app = PgQueue("periodic")
# Cron fields are wall-clock times in this zone (an entry may name its own).
app.conf.timezone = "Europe/Berlin"

app.conf.beat_schedule = {
    # Every 2 seconds; the task is told which tick it is running for.
    "heartbeat": {"task": "periodic.heartbeat", "schedule": 2.0, "tick_kwarg": "tick"},
    # Every quarter of an hour, on the quarter.
    "quarter-hourly-report": {
        "task": "periodic.report",
        "schedule": crontab(minute="*/15"),
        "args": ("sales",),
        "options": {"expires": 600},  # not worth running once the next one is due
    },
}


@app.task(name="periodic.heartbeat")
def heartbeat(tick: str) -> str:
    return f"alive at tick {tick}"


@app.task(name="periodic.report")
def report(kind: str) -> str:
    return f"{kind} report"


@app.task(name="periodic.cleanup")
def cleanup(days: int) -> str:
    return f"deleted rows older than {days} days"


# The other way to declare one: 03:00 Berlin time every night, whatever the season.
app.add_periodic_task(crontab(minute=0, hour=3), cleanup.s(days=30), name="nightly-cleanup")
