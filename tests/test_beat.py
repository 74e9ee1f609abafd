"""Beat: periodic tasks from pgqueue.periodic_tasks, against a real Postgres and real processes."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
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
    TICK_OPTION,
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


class BeatProcess(CliProcess):
    """A real ``pgqueue beat`` process against the test database."""

    kind = "beat"

    def __init__(self, dsn: str, db: psycopg.Connection[Any], args: list[str]) -> None:
        super().__init__(dsn, db, ["beat", "--loglevel", "DEBUG", *args])

    @property
    def application_name(self) -> str:
        return f"pgqueue beat beat.{self.proc.pid}@%"

    def wait_ready(self, timeout: float = 30) -> BeatProcess:
        self._wait_until(lambda: " ready" in self.output(), timeout, "beat to be ready")
        return self


@pytest.fixture
def beat_process(dsn: str, db: psycopg.Connection[Any]) -> Iterator[Callable[..., BeatProcess]]:
    """Start beats: ``beat_process()`` runs ``pgqueue beat -A tests.beatapp:app``."""
    started: list[BeatProcess] = []

    def start(*args: str, ready: bool = True) -> BeatProcess:
        b = BeatProcess(dsn, db, list(args or ("-A", "tests.beatapp:app")))
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


def test_the_tick_reaches_the_task_in_its_request_options(app, db):
    add_entry(db, entry("tick-option", every=60))
    drain(app, db)
    db.execute("UPDATE pgqueue.periodic_tasks SET next_run_at = now() - interval '1 second'")
    [sent] = drain(app, db)
    options = db.execute("SELECT options FROM pgqueue.jobs").fetchone()[0]
    assert options[TICK_OPTION] == sent.tick.isoformat()


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
    assert [b.stop() for b in beats] == [0, 0, 0]

    found = ticks(db, "every-second")
    assert len(found) >= 50
    assert_each_tick_once(found, SECOND)
    ids = {r[0] for r in db.execute("SELECT id::text FROM pgqueue.jobs WHERE kwargs ? 'tick'")}
    assert ids == {tick_task_id("every-second", t) for t in found}
    state = row(db, "every-second")
    assert state["total_run_count"] == len(found)
    assert state["last_run_at"] == found[-1]
    # what the beats say they sent adds up to the jobs there are
    logs = [b.output().count("beat: sent every-second") for b in beats]
    assert sum(logs) == len(found), logs
    # every beat synced the code's entry, and none of them disabled it
    assert row(db, "beatapp-daily")["enabled"] and row(db, "beatapp-daily")["declared_in_code"]


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
        assert held not in ticks(db, "held")
    # the lock is released: the dead beat's transaction rolls back, the live one takes over
    wait_for(lambda: any(t >= held + 4 * step for t in ticks(db, "held")), 30, "more ticks")
    assert second.stop() == 0

    found = ticks(db, "held")
    assert found.count(held) == 1
    assert_each_tick_once(found, step)


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

    run = cli("beat", "run", "witness")
    assert run.exit_code == 0, run.output
    job_id = run.output.split()[-1]
    assert db.execute(
        "SELECT kwargs->>'entry' FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone() == ("witness",)
    assert row(db, "witness")["next_run_at"] == planned

    listed = cli("beat", "list")
    assert listed.exit_code == 0
    lines = {line.split()[0]: line for line in listed.output.splitlines()[1:]}
    assert set(lines) == {"beatapp-daily", "cli-every", "witness"}
    assert "every 3600s" in lines["witness"] and "yes" in lines["witness"]

    removed = cli("beat", "remove", "cli-every")
    assert removed.exit_code == 0 and "removed cli-every" in removed.output
    assert [e.name for e in list_entries(db)] == ["beatapp-daily", "witness"]

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
