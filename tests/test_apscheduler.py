"""APScheduler 3 triggers as beat schedules (pgqueue/triggers.py): each kind converted to a
periodic_tasks row whose ticks are the trigger's own fire times, time zones and a daylight
saving change included; what cannot be represented is refused with the reason; ticks
replayed through beat's tick() against the test database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from pgqueue import PgQueue
from pgqueue.beat import list_rows, sync_schedule, tick
from pgqueue.exceptions import InvalidSchedule
from pgqueue.schedules import Schedule
from pgqueue.task import Signature

apscheduler = pytest.importorskip("apscheduler")
from apscheduler.triggers.combining import OrTrigger  # noqa: E402
from apscheduler.triggers.cron import CronTrigger  # noqa: E402
from apscheduler.triggers.date import DateTrigger  # noqa: E402
from apscheduler.triggers.interval import IntervalTrigger  # noqa: E402

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
# Berlin moves its clocks forward at 02:00 on 29 March 2026, back at 03:00 on 25 October.
BEFORE_SPRING = dt.datetime(2026, 3, 27, 12, 0, tzinfo=BERLIN)
BEFORE_AUTUMN = dt.datetime(2026, 10, 23, 12, 0, tzinfo=BERLIN)


def fire_times(trigger: Any, after: dt.datetime, count: int) -> list[dt.datetime]:
    """What APScheduler itself would run: the trigger's next fire times from ``after``."""
    times: list[dt.datetime] = []
    previous = None
    now = after
    while len(times) < count:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None:
            break
        times.append(nxt.astimezone(UTC))
        previous = nxt
        now = nxt
    return times


def ticks(schedule: Schedule, after: dt.datetime, count: int) -> Iterator[dt.datetime]:
    t: dt.datetime | None = after - dt.timedelta(microseconds=1)
    for _ in range(count):
        assert t is not None
        t = schedule.next_after(t)
        if t is None:
            return
        yield t


def same_ticks(trigger: Any, after: dt.datetime, count: int = 60) -> None:
    schedule = Schedule.parse(trigger)
    expected = fire_times(trigger, after, count)
    assert list(ticks(schedule, after, count)) == expected, schedule.describe()


@pytest.mark.parametrize(
    ("trigger", "cron"),
    [
        (CronTrigger(hour=3, minute=30, timezone="Europe/Berlin"), "30 3 * * *"),
        (CronTrigger(day_of_week="mon-fri", hour=9, timezone="UTC"), "0 9 * * 1,2,3,4,5"),
        (CronTrigger(day_of_week="sat,sun", hour="*/6", timezone="UTC"), "0 */6 * * 0,6"),
        # APScheduler 3 reads crontab weekday numbers its own way (0 is Monday); the row
        # keeps what the trigger did, not what the text would mean to cron.
        (CronTrigger.from_crontab("*/15 9-17 * * 0", timezone="UTC"), "*/15 9-17 * * 1"),
        (CronTrigger(day="last", hour=23, timezone="UTC"), "0 23 L * *"),
        (CronTrigger(month="jan-mar", day=1, timezone="UTC"), "0 0 1 1-3 *"),
        (CronTrigger(second="*/10", timezone="UTC"), "* * * * * */10"),
    ],
)
def test_cron_trigger_becomes_a_cron_row(trigger: Any, cron: str) -> None:
    schedule = Schedule.parse(trigger)
    assert (schedule.cron, schedule.day_or) == (cron, False)
    same_ticks(trigger, dt.datetime(2026, 1, 1, tzinfo=UTC), 40)


@pytest.mark.parametrize("when", [BEFORE_SPRING, BEFORE_AUTUMN], ids=["spring", "autumn"])
@pytest.mark.parametrize(
    "trigger",
    [
        CronTrigger(minute="*/20", timezone="Europe/Berlin"),
        CronTrigger(hour="8-18", minute=0, day_of_week="mon-sat", timezone="Europe/Berlin"),
        CronTrigger(hour=6, minute=15, timezone="America/New_York"),
        IntervalTrigger(minutes=45, start_date=BEFORE_SPRING, timezone="Europe/Berlin"),
    ],
    ids=["every-20-min", "office-hours", "new-york-daily", "interval"],
)
def test_ticks_match_apscheduler_across_daylight_saving(trigger: Any, when: dt.datetime) -> None:
    same_ticks(trigger, when, 200)


def test_start_and_end_dates_bound_the_ticks() -> None:
    start = dt.datetime(2026, 5, 4, 10, 0, tzinfo=BERLIN)
    end = dt.datetime(2026, 5, 8, 10, 0, tzinfo=BERLIN)
    trigger = CronTrigger(hour="9-17", minute=30, start_date=start, end_date=end)
    schedule = Schedule.parse(trigger)
    assert schedule.start == start and schedule.end == end and schedule.timezone == "Europe/Berlin"
    same_ticks(trigger, dt.datetime(2026, 5, 1, tzinfo=UTC), 100)
    assert list(ticks(schedule, dt.datetime(2026, 5, 1, tzinfo=UTC), 100))[-1] == dt.datetime(
        2026, 5, 8, 9, 30, tzinfo=BERLIN
    )


def test_interval_trigger_keeps_its_anchor_and_end() -> None:
    start = dt.datetime(2026, 1, 1, 0, 7, tzinfo=UTC)
    trigger = IntervalTrigger(
        minutes=10, start_date=start, end_date=start + dt.timedelta(hours=5), timezone="UTC"
    )
    schedule = Schedule.parse(trigger)
    assert (schedule.interval, schedule.start) == (600.0, start)
    same_ticks(trigger, start + dt.timedelta(minutes=33), 100)
    assert len(list(ticks(schedule, start, 100))) == 31


def test_date_trigger_is_a_one_off() -> None:
    when = dt.datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    schedule = Schedule.parse(DateTrigger(run_date=when))
    assert (schedule.cron, schedule.interval, schedule.start) == (None, None, when)
    assert schedule.timezone == "Asia/Tokyo"
    assert schedule.next_after(when - dt.timedelta(seconds=1)) == when
    assert schedule.next_after(when) is None
    assert schedule.describe() == "once at 2026-07-01T00:00:00+00:00"


def test_a_repeated_autumn_time_runs_once_where_apscheduler_runs_it_twice() -> None:
    trigger = CronTrigger(hour=2, minute=30, timezone="Europe/Berlin")
    midnight = dt.datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN)
    ours = list(ticks(Schedule.parse(trigger), midnight, 2))
    assert ours == [
        dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 summer time only
        dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]
    assert fire_times(trigger, midnight, 2)[1] == dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_fixed_offset_zone_gets_its_etc_name() -> None:
    zone = dt.timezone(dt.timedelta(hours=2))
    assert Schedule.parse(CronTrigger(hour=1, timezone=zone)).timezone == "Etc/GMT-2"


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [
        (CronTrigger(hour=3, jitter=30, timezone="UTC"), "jitter"),
        (IntervalTrigger(minutes=5, jitter=10, timezone="UTC"), "jitter"),
        (CronTrigger(year=2027, hour=3, timezone="UTC"), "start_date and end_date"),
        (CronTrigger(week=10, timezone="UTC"), "ISO week"),
        (CronTrigger(day="2nd fri", timezone="UTC"), "2nd fri"),
        (CronTrigger(hour=1, timezone=dt.timezone(dt.timedelta(minutes=90))), "IANA"),
        (
            OrTrigger([CronTrigger(hour=1, timezone="UTC"), CronTrigger(hour=2, timezone="UTC")]),
            "one entry per trigger",
        ),
    ],
)
def test_what_cannot_be_represented_is_refused(trigger: Any, reason: str) -> None:
    with pytest.raises(InvalidSchedule, match=reason):
        Schedule.parse(trigger)


def test_refusal_names_the_periodic_task() -> None:
    app = PgQueue("aps")
    with pytest.raises(InvalidSchedule, match=r"'nightly'.*jitter"):
        app.add_periodic_task(
            CronTrigger(hour=3, jitter=5, timezone="UTC"), _sig(app), name="nightly"
        )


def _sig(app: PgQueue) -> Signature:
    return Signature("aps.job", app=app)


# -- beat's tick() against the test database ------------------------------------------


@pytest.fixture
def app(dsn: str) -> Iterator[PgQueue]:
    """An app of its own: its beat_schedule holds only the test's entries."""
    own = PgQueue("aps", dsn=dsn)
    yield own
    own.close()


def drain(app: PgQueue, conn: psycopg.Connection[Any], now: dt.datetime) -> list[Any]:
    done = []
    while (t := tick(app, conn, now=now)) is not None:
        done.append(t)
    return done


def sent(db: psycopg.Connection[Any], name: str) -> list[dt.datetime]:
    rows = db.execute(
        "SELECT (options->>'beat_tick')::timestamptz FROM pgqueue.jobs"
        " WHERE kwargs->>'entry' = %s ORDER BY 1",
        (name,),
    ).fetchall()
    return [r[0] for r in rows]


def entry_row(db: psycopg.Connection[Any], name: str) -> Any:
    return next(e for e in list_rows(db) if e.name == name)


def test_cron_trigger_ticks_in_its_zone_until_its_end_then_disables(
    app: PgQueue, db: psycopg.Connection[Any]
) -> None:
    start = dt.datetime(2026, 3, 27, 0, 0, tzinfo=BERLIN)
    end = dt.datetime(2026, 3, 31, 0, 0, tzinfo=BERLIN)
    trigger = CronTrigger(hour=2, minute=30, start_date=start, end_date=end)
    app.add_periodic_task(trigger, _sig(app), kwargs={"entry": "night"}, name="night")
    sync_schedule(app, db)
    drain(app, db, now=start - dt.timedelta(days=1))  # initialised: first tick computed
    now = start - dt.timedelta(days=1)
    while now < end + dt.timedelta(days=2):
        now += dt.timedelta(minutes=30)
        drain(app, db, now=now)
    # 02:30 Berlin on 27, 28 and 30 March; on the 29th 02:30 does not exist (the clock
    # jumps from 02:00 to 03:00): pgqueue's rule sends it at 03:30 summer time.
    assert sent(db, "night") == [
        dt.datetime(2026, 3, 27, 1, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]
    row = entry_row(db, "night")
    assert (row.enabled, row.next_run_at, row.total_run_count) == (False, None, 4)


def test_date_trigger_fires_once_then_stays_disabled_across_restarts(
    app: PgQueue, db: psycopg.Connection[Any]
) -> None:
    when = dt.datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    app.add_periodic_task(
        DateTrigger(run_date=when), _sig(app), kwargs={"entry": "once"}, name="once"
    )
    sync_schedule(app, db)
    assert drain(app, db, now=when - dt.timedelta(hours=1))[0].next_run_at == when
    assert drain(app, db, now=when - dt.timedelta(seconds=1)) == []
    # Two beats at the tick: the second finds nothing due.
    assert len(drain(app, db, now=when + dt.timedelta(seconds=5))) == 1
    assert drain(app, db, now=when + dt.timedelta(seconds=5)) == []
    assert sent(db, "once") == [when]
    assert entry_row(db, "once").enabled is False
    sync_schedule(app, db)  # a beat restarting with the same code
    assert entry_row(db, "once").enabled is False
    assert drain(app, db, now=when + dt.timedelta(days=1)) == []
    assert sent(db, "once") == [when]


def test_date_trigger_already_past_never_runs(app: PgQueue, db: psycopg.Connection[Any]) -> None:
    when = dt.datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    app.add_periodic_task(
        DateTrigger(run_date=when), _sig(app), kwargs={"entry": "late"}, name="late"
    )
    sync_schedule(app, db)
    done = drain(app, db, now=when + dt.timedelta(minutes=1))
    assert [(t.tick, t.next_run_at) for t in done] == [(None, None)]
    assert sent(db, "late") == []
    assert entry_row(db, "late").enabled is False


def test_interval_trigger_ticks_on_its_anchor(app: PgQueue, db: psycopg.Connection[Any]) -> None:
    start = dt.datetime(2026, 1, 1, 0, 7, tzinfo=UTC)
    trigger = IntervalTrigger(minutes=10, start_date=start, timezone="UTC")
    app.add_periodic_task(trigger, _sig(app), kwargs={"entry": "every10"}, name="every10")
    sync_schedule(app, db)
    now = start + dt.timedelta(minutes=21)  # beat starts between ticks
    drain(app, db, now=now)
    for _ in range(6):
        now += dt.timedelta(minutes=5)
        drain(app, db, now=now)
    assert sent(db, "every10") == [start + dt.timedelta(minutes=m) for m in (30, 40, 50)]
