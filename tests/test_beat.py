"""Beat: periodic tasks from pgqueue.periodic_tasks, against a real Postgres and real processes."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue import PgQueue, crontab
from pgqueue.beat import (
    Beat,
    PeriodicEntry,
    add_entry,
    list_entries,
    set_enabled,
    sync_schedule,
    tick,
    tick_task_id,
)
from pgqueue.cli import main as cli_main
from pgqueue.exceptions import ConfigurationError
from pgqueue.schedules import InvalidSchedule, Schedule, next_cron_time
from pgqueue.task import Signature
from tests.conftest import ROOT, CliProcess, wait_for

UTC = dt.timezone.utc
SECOND = dt.timedelta(seconds=1)


# -- helpers -------------------------------------------------------------------------------


def entry(
    name: str, *, every: float | None = None, cron: str | None = None, **fields: Any
) -> PeriodicEntry:
    """A test entry whose jobs carry their entry name and tick in kwargs, for the checks."""
    timezone = fields.pop("timezone", "UTC")
    return PeriodicEntry(
        name=name,
        task=fields.pop("task", "tests.beat.noop"),
        schedule=Schedule(cron=cron, interval=every, timezone=timezone),
        kwargs={"entry": name},
        tick_kwarg="tick",
        **fields,
    )


def ticks(db: psycopg.Connection[Any], name: str) -> list[dt.datetime]:
    """The tick of every job of entry ``name``, in order (duplicates kept)."""
    rows = db.execute(
        "SELECT (kwargs->>'tick')::timestamptz FROM pgqueue.jobs WHERE kwargs->>'entry' = %s"
        " ORDER BY 1",
        (name,),
    ).fetchall()
    return [r[0] for r in rows]


def row(db: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    found = [e for e in list_entries(db) if e.name == name]
    assert found, f"no periodic task {name!r}"
    e = found[0]
    return {
        "enabled": e.enabled,
        "declared_in_code": e.declared_in_code,
        "next_run_at": e.next_run_at,
        "last_run_at": e.last_run_at,
        "total_run_count": e.total_run_count,
        "schedule": e.schedule,
    }


def drain(app: PgQueue, conn: Any, **kwargs: Any) -> list[Any]:
    """Run tick() until nothing is due; what each call did."""
    done = []
    while (t := tick(app, conn, **kwargs)) is not None:
        done.append(t)
    return done


def assert_each_tick_once(found: list[dt.datetime], step: dt.timedelta) -> None:
    twice = sorted({t.isoformat() for t in found if found.count(t) > 1})
    assert not twice, f"{len(twice)} tick(s) sent more than once, first {twice[:3]}"
    missing = [a + step for a, b in itertools.pairwise(found) if b - a != step]
    assert not missing, f"tick(s) missing after {[m.isoformat() for m in missing[:3]]}"


# What beat logs when a tick's job id already exists (beat._send): the sign of a tick sent
# twice, which the job id derived from (entry, tick) would otherwise hide.
ALREADY_ENQUEUED = "was already enqueued"


def sent_ticks(output: str, name: str) -> list[dt.datetime]:
    """The ticks of entry ``name`` a beat's log says it sent ("beat: sent ... for tick ...")."""
    pattern = rf"beat: sent {re.escape(name)}: \S+ for tick (\S+)"
    return [dt.datetime.fromisoformat(t) for t in re.findall(pattern, output)]


def assert_each_job_sent_by_one_beat(
    beats: list[BeatProcess], name: str, found: list[dt.datetime]
) -> None:
    """Each job of ``name`` is in exactly one beat's log, and no beat tried a tick twice."""
    outputs = [b.output() for b in beats]
    for b, out in zip(beats, outputs, strict=True):
        twice = [line for line in out.splitlines() if ALREADY_ENQUEUED in line]
        assert not twice, f"{b.kind} {b.pid} sent {len(twice)} tick(s) twice, first {twice[0]}"
    claimed = sorted(t for out in outputs for t in sent_ticks(out, name))
    assert claimed == sorted(found), [len(sent_ticks(out, name)) for out in outputs]


class BeatProcess(CliProcess):
    """A real ``pgqueue beat`` process, or with ``in_worker`` a ``pgqueue worker --beat``."""

    kind = "beat"

    def __init__(
        self, dsn: str, db: psycopg.Connection[Any], args: list[str], *, in_worker: bool = False
    ) -> None:
        self.in_worker = in_worker
        self.kind = "worker-beat" if in_worker else "beat"
        command = ["worker", "--beat", "-P", "solo"] if in_worker else ["beat"]
        super().__init__(dsn, db, [*command, "--loglevel", "DEBUG", *args])

    @property
    def application_name(self) -> str:
        return f"pgqueue beat beat.{self.proc.pid}@%"

    def connected(self) -> bool:
        """Whether this process's beat has its database session now."""
        found = self.db.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s",
            (self.application_name,),
        ).fetchone()
        return found is not None

    def wait_ready(self, timeout: float = 30) -> BeatProcess:
        def ready() -> bool:
            out = self.output()
            beat = re.search(r"beat \S+ ready", out) is not None
            return beat and (not self.in_worker or re.search(r"worker \S+ ready", out) is not None)

        self._wait_until(ready, timeout, f"{self.kind} to be ready")
        return self


@pytest.fixture
def beat_process(dsn: str, db: psycopg.Connection[Any]) -> Iterator[Callable[..., BeatProcess]]:
    """Start beats: ``beat_process()`` runs ``pgqueue beat -A tests.beatapp:app``, and
    ``beat_process(in_worker=True)`` ``pgqueue worker --beat -P solo -A tests.beatapp:app``."""
    started: list[BeatProcess] = []

    def start(*args: str, ready: bool = True, in_worker: bool = False) -> BeatProcess:
        b = BeatProcess(dsn, db, list(args or ("-A", "tests.beatapp:app")), in_worker=in_worker)
        started.append(b)
        return b.wait_ready() if ready else b

    yield start
    for b in started:
        b.close()


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Invoke ``pgqueue ...`` in this process; PGQUEUE_DSN is the test database."""
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli_main, list(args), catch_exceptions=False)

    return invoke


# -- schedules -----------------------------------------------------------------------------


def test_crontab_has_celerys_fields_and_meaning():
    assert crontab(minute=0, hour=3).expression == "0 3 * * *"
    assert crontab(minute="*/15").expression == "*/15 * * * *"
    assert crontab(0, 9, day_of_week="mon-fri").expression == "0 9 * * mon-fri"
    assert crontab(minute={30, 0}, day_of_week="Friday").expression == "0,30 * * * fri"
    # Celery: with both day fields given, a day must match both (Friday the 13th) ...
    friday_13th = Schedule.parse(crontab(0, 0, day_of_week="fri", day_of_month=13))
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert friday_13th.next_after(start) == dt.datetime(2026, 2, 13, tzinfo=UTC)
    # ... while a cron string keeps classic cron's either (the first Friday is Jan 2nd).
    either = Schedule.parse("0 0 13 * 5")
    assert either.next_after(start) == dt.datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: crontab(minute=61), "out of range"),
        (lambda: crontab(hour="25"), "out of range"),
        (lambda: crontab(day_of_week="someday"), "invalid cron"),
        (lambda: Schedule.parse("*/0 * * * *"), "step"),
        (lambda: Schedule.parse("0 0 30 2 *"), "never matches"),
        (lambda: Schedule.parse("0 0 * *"), "5 fields"),
        (lambda: Schedule.parse(0), "positive"),
        (lambda: Schedule.parse(dt.timedelta(seconds=-5)), "positive"),
        (lambda: Schedule.parse(object()), "unsupported schedule"),
        (lambda: Schedule.parse("0 3 * * *", "Mars/Olympus"), "unknown time zone"),
    ],
)
def test_invalid_schedules_are_refused_when_declared(declare, message):
    with pytest.raises(InvalidSchedule, match=message):
        declare()


def test_add_periodic_task_validates_and_joins_beat_schedule(dsn):
    app = PgQueue("declare", dsn=dsn)
    with pytest.raises(ValueError, match=r"periodic task 'bad'.*out of range"):
        app.add_periodic_task("61 * * * *", Signature("t.x"), name="bad")
    with pytest.raises(ConfigurationError, match=r"unknown option.*routing_key"):
        app.add_periodic_task(30, Signature("t.x"), routing_key="x")
    assert app.conf.beat_schedule == {}
    name = app.add_periodic_task(10, Signature("t.ping", ("db",)), queue="health")
    assert name == "t.ping('db')"
    assert app.conf.beat_schedule[name]["options"] == {"queue": "health"}
    # the default schedule dict is shared by every app: declaring must not leak into others
    assert PgQueue("other", dsn=dsn).conf.beat_schedule == {}


def test_add_periodic_task_takes_a_task_and_a_timedelta_schedule(dsn, db):
    code = PgQueue("task-object", dsn=dsn)

    @code.task(name="ops.sweep")
    def sweep(days: int, dry_run: bool = False) -> None: ...

    every = dt.timedelta(days=1, minutes=30)  # .seconds alone would be 1800
    name = code.add_periodic_task(every, sweep, args=(7,), kwargs={"dry_run": True}, queue="ops")
    assert name == "ops.sweep(7, dry_run=True)"
    sync_schedule(code, db)
    assert row(db, name)["schedule"] == Schedule(interval=88200.0)

    drain(code, db)  # computes the first tick
    db.execute("UPDATE pgqueue.periodic_tasks SET next_run_at = now() - interval '1 second'")
    [sent] = drain(code, db)
    job = db.execute("SELECT task_name, args, kwargs, queue FROM pgqueue.jobs").fetchone()
    assert job == ("ops.sweep", [7], {"dry_run": True}, "ops")
    assert row(db, name)["next_run_at"] == sent.tick + every


def test_a_bad_beat_schedule_stops_beat_before_it_starts(dsn):
    app = PgQueue("bad-schedule", dsn=dsn)
    app.conf.beat_schedule = {"digest": {"task": "mail.digest", "schedule": "*/15 * * *"}}
    with pytest.raises(InvalidSchedule, match=r"periodic task 'digest'.*5 fields"):
        Beat(app).start()


# -- daylight saving -----------------------------------------------------------------------


def run_of(expression: str, zone: str, start: dt.datetime, count: int) -> list[dt.datetime]:
    found, at = [], start
    for _ in range(count):
        at = next_cron_time(expression, at, zone)
        found.append(at)
    return found


def test_daily_0230_runs_once_on_each_dst_change_day_in_berlin():
    # Spring 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    spring = run_of("30 2 * * *", "Europe/Berlin", dt.datetime(2026, 3, 28, 12, tzinfo=UTC), 3)
    assert spring == [
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST, as far past the jump
        dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
        dt.datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]
    # Autumn 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    autumn = run_of("30 2 * * *", "Europe/Berlin", dt.datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    assert autumn == [
        dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 (CEST) only
        dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
        dt.datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]


def test_daily_0130_runs_once_on_new_yorks_repeated_hour():
    found = run_of("30 1 * * *", "America/New_York", dt.datetime(2026, 10, 31, 12, tzinfo=UTC), 2)
    assert found == [
        dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT; not again at 01:30 EST
        dt.datetime(2026, 11, 2, 6, 30, tzinfo=UTC),  # 01:30 EST
    ]


@pytest.mark.parametrize(
    "start",
    [dt.datetime(2026, 3, 29, 0, 0, tzinfo=UTC), dt.datetime(2026, 10, 24, 23, 0, tzinfo=UTC)],
    ids=["spring", "autumn"],
)
def test_every_quarter_hour_keeps_its_rhythm_across_dst_changes(start):
    found = run_of("*/15 * * * *", "Europe/Berlin", start, 16)
    assert_each_tick_once(found, dt.timedelta(minutes=15))


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (dt.date(2026, 3, 29), dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        (dt.date(2026, 10, 25), dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
    ids=["spring", "autumn"],
)
def test_replaying_a_dst_day_through_the_table_sends_the_0230_job_once(app, db, day, expected):
    add_entry(db, entry("dst", cron="30 2 * * *", timezone="Europe/Berlin", catch_up="all"))
    start = dt.datetime.combine(day, dt.time(), UTC) - dt.timedelta(hours=4)
    # the beat's clock moves in 5-minute steps through 24 hours around the change
    for step in range(12 * 24):
        drain(app, db, now=start + dt.timedelta(minutes=5 * step))
    assert ticks(db, "dst") == [expected]


def at(month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=UTC)


# A daily 02:30 in Berlin, in UTC, over four days around each change of 2026.
SPRING_0230 = [at(3, 28, 1, 30), at(3, 29, 1, 30), at(3, 30, 0, 30), at(3, 31, 0, 30)]
AUTUMN_0230 = [at(10, 24, 0, 30), at(10, 25, 0, 30), at(10, 26, 1, 30), at(10, 27, 1, 30)]


@pytest.mark.parametrize("expected", [SPRING_0230, AUTUMN_0230], ids=["spring", "autumn"])
@pytest.mark.parametrize(
    "step",
    [dt.timedelta(minutes=5), dt.timedelta(hours=7)],
    ids=["beat-every-5-minutes", "beat-every-7-hours"],
)
def test_catch_up_once_sends_a_daily_0230_job_once_a_day_across_dst_changes(
    app, db, expected, step
):
    # catch_up="once", the default: a tick seen late goes through the jump to the latest
    # due tick (Schedule.latest_due), which must agree with next_after on DST days
    add_entry(db, entry("dst-once", cron="30 2 * * *", timezone="Europe/Berlin"))
    now, end = expected[0] - dt.timedelta(hours=14), expected[-1] + dt.timedelta(hours=12)
    while now <= end:
        drain(app, db, now=now)
        now += step
    assert ticks(db, "dst-once") == expected


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        # beats down from the 26th to noon on the day 02:30 is skipped
        ([at(3, 26, 12), at(3, 29, 12), at(3, 29, 23), at(3, 30, 12)], SPRING_0230[1:3]),
        # down from the 23rd to 02:45 of the second, repeated, 02:00-03:00 hour
        ([at(10, 23, 12), at(10, 25, 1, 45), at(10, 25, 23), at(10, 26, 12)], AUTUMN_0230[1:3]),
    ],
    ids=["spring", "autumn"],
)
def test_catch_up_once_after_an_outage_into_a_dst_change_day_sends_its_0230_job_once(
    app, db, clock, expected
):
    add_entry(db, entry("dst-outage", cron="30 2 * * *", timezone="Europe/Berlin"))
    for now in clock:
        drain(app, db, now=now)
    assert ticks(db, "dst-outage") == expected


# -- the tick ------------------------------------------------------------------------------


def test_a_tick_is_an_ordinary_job_with_the_entrys_options_and_a_deterministic_id(app, db):
    add_entry(
        db,
        PeriodicEntry(
            name="report",
            task="reports.build",
            schedule=Schedule(interval=60),
            args=("sales",),
            kwargs={"region": "eu"},
            queue="reports",
            priority=7,
            expires=120,
            options={"max_retries": 5, "time_limit": 30},
            tick_kwarg="tick",
        ),
    )
    drain(app, db)  # computes the first tick
    db.execute("UPDATE pgqueue.periodic_tasks SET next_run_at = now() - interval '1 second'")
    due = row(db, "report")["next_run_at"]
    [sent] = drain(app, db)
    assert sent.tick == due
    job = db.execute(
        "SELECT id::text, task_name, args, kwargs, queue, priority, max_retries, time_limit,"
        " round(extract(epoch FROM expires_at - enqueued_at))::int FROM pgqueue.jobs"
    ).fetchone()
    assert job == (
        tick_task_id("report", due),
        "reports.build",
        ["sales"],
        {"region": "eu", "tick": due.isoformat()},
        "reports",
        7,
        5,
        30.0,
        120,
    )
    after = row(db, "report")
    assert after["next_run_at"] == due + dt.timedelta(seconds=60)
    assert (after["last_run_at"], after["total_run_count"]) == (due, 1)


def test_a_task_run_by_a_worker_sees_its_tick_in_its_request_and_tick_kwarg(db, beat_process):
    add_entry(
        db,
        PeriodicEntry(
            name="which-run",
            task="tests.beat.which_run",
            schedule=Schedule(interval=0.5),
            tick_kwarg="tick",
        ),
    )
    # a worker with its own beat: the beat sends the ticks, the worker runs them
    worker = beat_process(in_worker=True)
    done = """
        SELECT task_id::text, result FROM pgqueue.results
         WHERE task_name = 'tests.beat.which_run' AND state = 'SUCCESS' ORDER BY date_done
    """
    runs = wait_for(
        lambda: (r := db.execute(done).fetchall()) and len(r) >= 2 and r,
        60,
        "two ticks run by the worker",
    )
    assert worker.stop() == 0
    seen = []
    for task_id, result in runs:
        tick = result["request_tick"]
        assert tick is not None, result  # self.request.options["beat_tick"]
        assert result["tick_kwarg"] == tick
        # the tick the task sees is the one its job was sent for
        assert result["id"] == task_id == tick_task_id("which-run", dt.datetime.fromisoformat(tick))
        seen.append(dt.datetime.fromisoformat(tick))
    assert len(set(seen)) == len(seen)


def test_a_tick_already_enqueued_is_not_enqueued_again_but_the_entry_advances(app, db):
    add_entry(db, entry("again", every=60))
    drain(app, db)
    db.execute("UPDATE pgqueue.periodic_tasks SET next_run_at = now() - interval '1 second'")
    [first] = drain(app, db)
    # someone moves next_run_at back by hand to the tick whose job is still queued
    db.execute("UPDATE pgqueue.periodic_tasks SET next_run_at = %s", (first.tick,))
    [second] = drain(app, db)
    assert second.task_id is None
    assert ticks(db, "again") == [first.tick]
    assert row(db, "again")["next_run_at"] == first.next_run_at
    assert row(db, "again")["total_run_count"] == 1


def test_catch_up_once_sends_one_job_for_the_latest_missed_tick(app, db):
    add_entry(db, entry("hourly-outage", every=60))
    add_entry(db, entry("cron-outage", cron="* * * * *"))
    drain(app, db)
    db.execute(
        "UPDATE pgqueue.periodic_tasks SET next_run_at = next_run_at - interval '1 hour'"
        " WHERE name = 'hourly-outage'"
    )
    db.execute(
        "UPDATE pgqueue.periodic_tasks SET next_run_at = date_trunc('minute', now())"
        " - interval '2 days' WHERE name = 'cron-outage'"
    )
    planned = row(db, "hourly-outage")["next_run_at"]
    drain(app, db)
    now = db.execute("SELECT now()").fetchone()[0]

    [sent] = ticks(db, "hourly-outage")
    after = row(db, "hourly-outage")
    assert sent <= now < sent + dt.timedelta(seconds=60)
    assert (sent - planned) % dt.timedelta(seconds=60) == dt.timedelta(0)  # a real tick
    assert after["next_run_at"] == sent + dt.timedelta(seconds=60)
    assert after["total_run_count"] == 1

    [sent] = ticks(db, "cron-outage")
    assert sent == now.replace(second=0, microsecond=0)  # the latest minute, not 2 days of them
    assert row(db, "cron-outage")["next_run_at"] == sent + dt.timedelta(minutes=1)


def test_catch_up_all_sends_one_job_per_missed_tick(app, db):
    add_entry(db, entry("every-missed", every=60, catch_up="all"))
    drain(app, db)
    db.execute("UPDATE pgqueue.periodic_tasks SET next_run_at = now() - interval '1 hour'")
    planned = row(db, "every-missed")["next_run_at"]
    drain(app, db)
    found = ticks(db, "every-missed")
    assert found[0] == planned
    assert len(found) == 61  # -60 min, -59 min, ..., the tick at (about) now
    assert_each_tick_once(found, dt.timedelta(seconds=60))
    assert row(db, "every-missed")["next_run_at"] > db.execute("SELECT now()").fetchone()[0]


def test_an_entry_that_cannot_be_sent_does_not_hold_up_the_others(app, db, caplog):
    add_entry(db, entry("fine", every=60))
    db.execute(
        "INSERT INTO pgqueue.periodic_tasks (name, task_name, cron, next_run_at)"
        " VALUES ('broken', 't.x', 'every tuesday', now() - interval '1 minute')"
    )
    db.execute("UPDATE pgqueue.periodic_tasks SET next_run_at = now() - interval '1 second'")
    beat = Beat(app, sync=False)
    try:
        assert beat.run_pending() == 1
        assert beat.run_pending() == 0  # broken is set aside, not retried in a loop
    finally:
        beat.stop()
    assert len(ticks(db, "fine")) == 1
    assert "periodic task 'broken'" in caplog.text and "invalid cron" in caplog.text


# -- syncing the code's schedule -----------------------------------------------------------


def test_sync_upserts_code_entries_and_disables_the_ones_removed(dsn, app, db):
    code = PgQueue("sync", dsn=dsn)
    code.conf.beat_schedule = {
        "ping": {"task": "health.ping", "schedule": 30.0},
        "nightly": {
            "task": "reports.nightly",
            "schedule": crontab(minute=0, hour=3),
            "options": {"queue": "reports", "expires": 3600},
        },
    }
    code.add_periodic_task(crontab(minute="*/5"), Signature("ops.cleanup"), name="cleanup")
    add_entry(db, entry("manual", every=60))
    sync_schedule(code, db)
    drain(code, db)
    assert row(db, "nightly")["schedule"] == Schedule(cron="0 3 * * *", day_or=False)
    assert all(row(db, n)["declared_in_code"] for n in ("ping", "nightly", "cleanup"))
    ping_next = row(db, "ping")["next_run_at"]

    set_enabled(db, "ping", False)  # an operator's choice
    del code.conf.beat_schedule["nightly"]
    code.add_periodic_task(crontab(minute="*/10"), Signature("ops.cleanup"), name="cleanup")
    result = sync_schedule(code, db)

    assert result.disabled == ["nightly"]
    nightly = row(db, "nightly")  # kept, with its history, but off
    assert (nightly["enabled"], nightly["declared_in_code"]) == (False, False)
    assert row(db, "cleanup")["next_run_at"] is None  # rescheduled: restarts from now
    assert row(db, "ping")["enabled"] is False  # the operator's disable survives a restart
    assert row(db, "ping")["next_run_at"] == ping_next
    assert row(db, "manual")["enabled"] is True  # not the code's: left alone

    back = {"task": "reports.nightly", "schedule": crontab(minute=0, hour=3)}
    code.conf.beat_schedule = {**code.conf.beat_schedule, "nightly": back}
    sync_schedule(code, db)
    assert row(db, "nightly")["enabled"] is True  # back in the code, back on


# -- beat processes ------------------------------------------------------------------------


def test_three_beat_processes_send_each_tick_exactly_once(db, beat_process):
    add_entry(db, entry("every-second", every=1.0, catch_up="all"))
    beats = [beat_process(ready=False) for _ in range(3)]
    for b in beats:
        b.wait_ready()
    wait_for(lambda: len(ticks(db, "every-second")) >= 50, 90, "50 ticks")
    # all three ran, connected, through every tick: each tick was there for three to take
    assert [b.connected() for b in beats] == [True, True, True]
    assert not any("reconnected" in b.output() for b in beats)
    assert [b.stop() for b in beats] == [0, 0, 0]

    found = ticks(db, "every-second")
    assert len(found) >= 50
    assert_each_tick_once(found, SECOND)
    ids = {r[0] for r in db.execute("SELECT id::text FROM pgqueue.jobs WHERE kwargs ? 'tick'")}
    assert ids == {tick_task_id("every-second", t) for t in found}
    state = row(db, "every-second")
    assert state["total_run_count"] == len(found)
    assert state["last_run_at"] == found[-1]
    # The job ids alone cannot show a tick sent twice: a second send of a tick hits the
    # unique id, is skipped and logged. So: no beat met an existing tick, and each job is
    # in the "sent" lines of exactly one beat.
    assert_each_job_sent_by_one_beat(beats, "every-second", found)
    # every beat synced the code's entry, and none of them disabled it
    assert row(db, "beatapp-daily")["enabled"] and row(db, "beatapp-daily")["declared_in_code"]


def test_worker_beats_and_beat_processes_together_send_each_tick_exactly_once(db, beat_process):
    add_entry(db, entry("mixed", every=1.0, catch_up="all"))
    beats = [
        beat_process(in_worker=True, ready=False),
        beat_process(in_worker=True, ready=False),
        beat_process(ready=False),
    ]
    for b in beats:
        b.wait_ready()
    wait_for(lambda: len(ticks(db, "mixed")) >= 10, 60, "10 ticks")
    assert [b.connected() for b in beats] == [True, True, True]
    assert not any("reconnected" in b.output() for b in beats)
    assert [b.stop() for b in beats] == [0, 0, 0]

    found = ticks(db, "mixed")
    assert len(found) >= 10
    assert_each_tick_once(found, SECOND)
    assert_each_job_sent_by_one_beat(beats, "mixed", found)
    assert row(db, "mixed")["total_run_count"] == len(found)


def test_killing_the_beat_holding_a_row_loses_no_tick(dsn, db, beat_process):
    step = dt.timedelta(seconds=0.5)
    add_entry(db, entry("held", every=0.5, catch_up="all"))
    first = beat_process()
    wait_for(lambda: len(ticks(db, "held")) >= 2, 30, "the first beat to send ticks")

    # Block job inserts, so that the beat stops mid-tick: row locked, job not yet written.
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE pgqueue.jobs IN SHARE MODE")
        blocked = """
            SELECT a.pid FROM pg_stat_activity AS a
             WHERE a.application_name LIKE %s AND a.wait_event_type = 'Lock'
        """
        wait_for(
            lambda: db.execute(blocked, (first.application_name,)).fetchone(),
            30,
            "the beat to block on the job insert",
        )
        held = row(db, "held")["next_run_at"]  # the tick in flight, as far as the table says
        first.proc.kill()
        first.proc.wait()
        second = beat_process()
    # the lock is released: the dead beat's transaction rolls back, the live one takes over
    wait_for(lambda: any(t >= held + 4 * step for t in ticks(db, "held")), 30, "more ticks")
    assert second.stop() == 0

    found = ticks(db, "held")
    assert_each_tick_once(found, step)
    # The held tick is sent once, by the survivor. Had the dead beat's job outlived the
    # kill, the survivor's send of it would have met the unique job id: logged as already
    # enqueued, not sent, and not counted in total_run_count.
    assert sent_ticks(second.output(), "held").count(held) == 1
    assert_each_job_sent_by_one_beat([first, second], "held", found)
    assert row(db, "held")["total_run_count"] == len(set(found))


def test_a_beat_that_loses_its_connection_reconnects_and_loses_no_tick(db, beat_process):
    step = dt.timedelta(seconds=0.2)
    add_entry(db, entry("steady", every=0.2, catch_up="all"))
    # without -A: no code to sync, the table is run as it is
    running = beat_process("--max-interval", "5")
    wait_for(lambda: len(ticks(db, "steady")) >= 2, 30, "ticks before the cut")
    cut = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name LIKE %s",
        (running.application_name,),
    ).fetchone()[0]
    assert cut == 1
    before = len(ticks(db, "steady"))
    wait_for(lambda: "reconnected" in running.output(), 30, "the beat to reconnect")
    wait_for(lambda: len(ticks(db, "steady")) >= before + 3, 30, "ticks after the cut")
    assert running.stop() == 0
    assert_each_tick_once(ticks(db, "steady"), step)
    assert [e.name for e in list_entries(db)] == ["steady"]


def test_cli_edits_take_effect_without_restarting_beat(db, beat_process, cli):
    running = beat_process()
    step = dt.timedelta(seconds=0.2)

    def add(name: str, *options: str) -> Any:
        tagged = ["--tick-kwarg", "tick", "--kwargs", json.dumps({"entry": name})]
        return cli("beat", "add", name, "t.noop", "--every", "0.2", *tagged, *options)

    added = add("cli-every", "--catch-up", "all")
    assert added.exit_code == 0, added.output
    assert "added cli-every: t.noop every 0.2s" in added.output
    wait_for(lambda: len(ticks(db, "cli-every")) >= 2, 15, "ticks of the added entry")

    assert cli("beat", "disable", "cli-every").exit_code == 0
    sent_before = len(ticks(db, "cli-every"))
    # a second entry as a witness: once it ticked twice, the beat has run passes since
    witness = add("witness")
    assert witness.exit_code == 0, witness.output
    wait_for(lambda: len(ticks(db, "witness")) >= 2, 15, "ticks of the witness")
    assert len(ticks(db, "cli-every")) == sent_before

    enabled_at = db.execute("SELECT now()").fetchone()[0]
    assert cli("beat", "enable", "cli-every").exit_code == 0
    wait_for(lambda: len(ticks(db, "cli-every")) > sent_before, 15, "ticks after enable")
    resumed = ticks(db, "cli-every")[sent_before:]
    assert min(resumed) > enabled_at  # resumed from now: the pause is not caught up
    assert_each_tick_once(resumed, step)

    # plain SQL is an edit too: the new schedule applies from now
    db.execute("UPDATE pgqueue.periodic_tasks SET interval_seconds = 3600 WHERE name = 'witness'")
    later = enabled_at + dt.timedelta(minutes=59)
    wait_for(
        lambda: (row(db, "witness")["next_run_at"] or later) > later,
        15,
        "the beat to reschedule the witness",
    )
    planned = row(db, "witness")["next_run_at"]

    runs_before = row(db, "witness")["total_run_count"]
    run = cli("beat", "run", "witness")
    assert run.exit_code == 0, run.output
    job_id = run.output.split()[-1]
    entry_name, run_tick = db.execute(
        "SELECT kwargs->>'entry', (options->>'beat_tick')::timestamptz FROM pgqueue.jobs"
        " WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert entry_name == "witness"
    after_run = row(db, "witness")
    assert after_run["next_run_at"] == planned
    # a run now counts as a run: last_run_at is the tick of the last job sent, this one's
    assert (after_run["last_run_at"], after_run["total_run_count"]) == (run_tick, runs_before + 1)

    listed = cli("beat", "list")
    assert listed.exit_code == 0
    lines = {line.split()[0]: line for line in listed.output.splitlines()[1:]}
    assert set(lines) == {"beatapp-daily", "cli-every", "witness"}
    assert "every 3600s" in lines["witness"] and "yes" in lines["witness"]

    removed = cli("beat", "remove", "cli-every")
    assert removed.exit_code == 0 and "removed cli-every" in removed.output
    assert [e.name for e in list_entries(db)] == ["beatapp-daily", "witness"]
    # The running beat stops sending it. A remove waits for a tick in flight, so what is
    # there now is all it sent; a new 0.2 s entry then ticks twice, and the beat sends due
    # entries oldest first, so cli-every (due every 0.2 s) would have been sent before.
    sent_until_removed = len(ticks(db, "cli-every"))
    assert add("after-remove").exit_code == 0
    wait_for(lambda: len(ticks(db, "after-remove")) >= 2, 15, "ticks after the remove")
    assert len(ticks(db, "cli-every")) == sent_until_removed

    assert running.stop() == 0
    assert "Traceback" not in running.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "bad", "t.x", "--cron", "61 * * * *"], "Error: invalid cron expression"),
        (["add", "bad", "t.x", "--every", "5", "--timezone", "Mars/Olympus"], "unknown time zone"),
        (["add", "bad", "t.x"], "exactly one of --cron and --every"),
        (["remove", "nope"], "Error: no periodic task named 'nope'"),
        (["enable", "nope"], "Error: no periodic task named 'nope'"),
        (["run", "nope"], "Error: no periodic task named 'nope'"),
    ],
)
def test_cli_refuses_bad_edits_with_one_clear_line(db, cli, args, message):
    result = cli("beat", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert list_entries(db) == []


def test_worker_with_embedded_beat_runs_the_periodic_example(dsn, db):
    example = ROOT / "examples" / "periodic"
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pgqueue-example-{os.getpid()}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", "worker", "--beat", "-A", "tasks:app",
             "-c", "1", "--loglevel", "DEBUG"],
            cwd=example, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            heartbeats = """
                SELECT result FROM pgqueue.results
                 WHERE task_name = 'periodic.heartbeat' AND state = 'SUCCESS' ORDER BY date_done
            """
            done = wait_for(
                lambda: (r := db.execute(heartbeats).fetchall()) and len(r) >= 2 and r,
                60,
                "two heartbeats run by the worker",
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text()
    log_path.unlink()
    assert all(r[0].startswith("alive at tick 20") for r in done), done
    names = {e.name: e for e in list_entries(db)}
    assert set(names) == {"heartbeat", "quarter-hourly-report", "nightly-cleanup"}
    assert names["quarter-hourly-report"].schedule.timezone == "Europe/Berlin"
    assert "stopped after sending" in output  # the worker stopped its beat on the way out
