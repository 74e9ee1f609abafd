"""Schedules: when a periodic task runs. Celery's ``crontab``, intervals, and cron arithmetic.

``croniter`` matches cron fields; this module decides what a match means in a time zone
that changes its clock (see ``next_cron_time``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from . import triggers
from .exceptions import InvalidSchedule

UTC = dt.timezone.utc


CronField = int | str | Iterable[int]

_DAY_NAMES = {
    "sunday": "sun", "monday": "mon", "tuesday": "tue", "wednesday": "wed",
    "thursday": "thu", "friday": "fri", "saturday": "sat",
}  # fmt: skip


def _cron_field(name: str, value: CronField) -> str:
    if isinstance(value, bool):
        raise InvalidSchedule(f"crontab {name}={value!r}: give a number, a string or a set")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        for long, short in _DAY_NAMES.items():
            text = text.replace(long, short)
        if not text:
            raise InvalidSchedule(f"crontab {name}={value!r} is empty")
        return text
    try:
        numbers = sorted({int(v) for v in value})
    except (TypeError, ValueError):
        raise InvalidSchedule(
            f"crontab {name}={value!r}: give a number, a cron string or a set of numbers"
        ) from None
    if not numbers:
        raise InvalidSchedule(f"crontab {name}={value!r} is empty")
    return ",".join(map(str, numbers))


class crontab:  # Celery's name, lower case
    """A cron schedule with Celery's signature and meaning.

    ``crontab(minute=0, hour=3)`` runs daily at 03:00, ``crontab(minute="*/15")`` every quarter
    hour, ``crontab(0, 9, day_of_week="mon-fri")`` at 09:00 on weekdays. Each field takes a
    number, a cron string (``"*/5"``, ``"1-5"``, ``"mon,wed"``) or a set of numbers. As in
    Celery, a day must match both ``day_of_week`` and ``day_of_month`` when both are given.
    Times are wall-clock times in the entry's zone (``timezone`` setting or per entry).
    An invalid field is refused here, with the reason.
    """

    day_or = False

    def __init__(
        self,
        minute: CronField = "*",
        hour: CronField = "*",
        day_of_week: CronField = "*",
        day_of_month: CronField = "*",
        month_of_year: CronField = "*",
    ) -> None:
        self.minute = _cron_field("minute", minute)
        self.hour = _cron_field("hour", hour)
        self.day_of_week = _cron_field("day_of_week", day_of_week)
        self.day_of_month = _cron_field("day_of_month", day_of_month)
        self.month_of_year = _cron_field("month_of_year", month_of_year)
        try:
            check_cron(self.expression, day_or=False)
        except InvalidSchedule as exc:
            raise InvalidSchedule(f"invalid {self!r}: {exc}") from None

    @property
    def expression(self) -> str:
        """The same schedule as a cron expression (minute hour day-of-month month weekday)."""
        return (
            f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"
        )

    def __repr__(self) -> str:
        fields = [
            ("minute", self.minute),
            ("hour", self.hour),
            ("day_of_week", self.day_of_week),
            ("day_of_month", self.day_of_month),
            ("month_of_year", self.month_of_year),
        ]
        given = ", ".join(f"{k}={v!r}" for k, v in fields if v != "*")
        return f"crontab({given})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(self.expression)


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidSchedule(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None


@cache
def _parse_cron(expression: str, day_or: bool) -> tuple[str, ...]:
    """The expanded fields of a valid expression (cached: every tick consults it)."""
    if len(expression.split()) not in (5, 6) and not expression.startswith("@"):
        raise InvalidSchedule(
            f"invalid cron expression {expression!r}: give 5 fields (minute hour "
            "day-of-month month day-of-week), optionally a 6th for seconds"
        )
    try:
        it = croniter(expression, dt.datetime(2000, 1, 1), day_or=day_or)
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidSchedule(f"invalid cron expression {expression!r}: {exc}") from None
    try:
        it.get_next(dt.datetime)
    except (CroniterError, ValueError) as exc:
        raise InvalidSchedule(
            f"cron expression {expression!r} never matches a date: {exc}"
        ) from None
    return tuple(str(f) for f in it.expressions)


def check_cron(expression: str, *, day_or: bool = True) -> str:
    """``expression`` with its whitespace normalised; raises InvalidSchedule if unusable."""
    if not isinstance(expression, str):
        raise InvalidSchedule(f"a cron expression must be a string, got {expression!r}")
    normalised = " ".join(expression.split())
    _parse_cron(normalised, day_or)
    return normalised


def next_cron_time(
    expression: str, after: dt.datetime, timezone: str = "UTC", *, day_or: bool = True
) -> dt.datetime:
    """The first tick of a cron expression strictly after ``after`` (aware), in UTC.

    Fields match wall-clock time in ``timezone``. Across a daylight-saving change:

    - An expression with a fixed hour (``30 2 * * *``) runs once a day whatever happens to
      the clock: a time skipped by the spring change runs as far after the change as it was
      after the hour (02:30 becomes 03:30 summer time; 02:30 and 03:30 on that day become
      one run); a time that occurs twice in autumn runs at its first occurrence only.
    - An expression whose hour is ``*`` (``*/15 * * * *``) follows elapsed time: it keeps its
      rhythm through the repeated autumn hour and has nothing to run in the skipped hour.
    """
    fields = _parse_cron(expression, day_or)
    zone = _zone(timezone)
    after = after.astimezone(UTC)
    if fields[1] == "*":
        return _next_in_elapsed_time(expression, day_or, zone, after)
    return _next_on_wall_clock(expression, day_or, zone, after)


def _next_on_wall_clock(
    expression: str, day_or: bool, zone: ZoneInfo, after: dt.datetime
) -> dt.datetime:
    wall = after.astimezone(zone).replace(tzinfo=None)
    it = croniter(expression, wall, day_or=day_or)
    for _ in range(1000):
        candidate: dt.datetime = it.get_next(dt.datetime)
        # fold=0 is the first of a repeated time, and for a skipped time applies the offset
        # from before the change, which lands that far after it. fold=1 (the second
        # occurrence) only serves an `after` inside the repeated hour itself.
        for fold in (0, 1):
            instant = candidate.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if instant > after:
                return instant
    raise InvalidSchedule(f"cron expression {expression!r}: no tick found after {after}")


def _next_in_elapsed_time(
    expression: str, day_or: bool, zone: ZoneInfo, after: dt.datetime
) -> dt.datetime:
    t, inclusive = after, False
    for _ in range(1000):
        local = t.astimezone(zone)
        wall = local.replace(tzinfo=None)
        start = wall - dt.timedelta(microseconds=1) if inclusive else wall
        candidate: dt.datetime = croniter(expression, start, day_or=day_or).get_next(dt.datetime)
        instant = t + (candidate - wall)  # at t's UTC offset
        if instant.astimezone(zone).utcoffset() == local.utcoffset():
            return instant
        # The offset changes before the candidate: look again from the change, which may
        # itself be a tick (02:00 of the repeated hour).
        t, inclusive = _offset_change(zone, t, instant), True
    raise InvalidSchedule(f"cron expression {expression!r}: no tick found after {after}")


def _offset_change(zone: ZoneInfo, lo: dt.datetime, hi: dt.datetime) -> dt.datetime:
    """The first whole second in (lo, hi] whose UTC offset differs from lo's."""
    base = lo.astimezone(zone).utcoffset()
    low, high = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if dt.datetime.fromtimestamp(mid, zone).utcoffset() == base:
            low = mid
        else:
            high = mid
    return dt.datetime.fromtimestamp(high, UTC)


def _latest_cron_time(
    expression: str, at_or_before: dt.datetime, timezone: str, day_or: bool
) -> dt.datetime | None:
    """A tick at or shortly before ``at_or_before``, found without stepping from the past."""
    zone = _zone(timezone)
    wall = at_or_before.astimezone(zone).replace(tzinfo=None)
    it = croniter(expression, wall + dt.timedelta(microseconds=1), day_or=day_or)
    previous: dt.datetime = it.get_prev(dt.datetime)
    instant = previous.replace(tzinfo=zone).astimezone(UTC)
    return instant if instant <= at_or_before else None


@dataclass(frozen=True)
class Schedule:
    """When an entry runs: a cron expression in a time zone, every ``interval`` seconds, or
    once (neither: at ``start``). ``start`` and ``end`` (aware) bound the ticks, both
    included; an interval with a ``start`` ticks on ``start + k * interval``."""

    cron: str | None = None
    interval: float | None = None
    timezone: str = "UTC"
    day_or: bool = True
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.cron is not None and self.interval is not None:
            raise InvalidSchedule("a schedule is either a cron expression or an interval")
        if self.cron is None and self.interval is None and self.start is None:
            raise InvalidSchedule(
                "a schedule needs a cron expression, an interval, or a start (run once)"
            )
        if self.interval is not None and not (math.isfinite(self.interval) and self.interval > 0):
            raise InvalidSchedule(
                f"an interval must be a positive number of seconds, got {self.interval!r}"
            )
        if self.cron is not None:
            object.__setattr__(self, "cron", check_cron(self.cron, day_or=self.day_or))
        for bound in ("start", "end"):
            value = getattr(self, bound)
            if value is not None and (not isinstance(value, dt.datetime) or not value.tzinfo):
                raise InvalidSchedule(f"a schedule's {bound} must be an aware datetime")
            if value is not None:
                object.__setattr__(self, bound, value.astimezone(UTC))
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InvalidSchedule(f"a schedule ends ({self.end}) before it starts ({self.start})")
        _zone(self.timezone)

    @classmethod
    def parse(cls, value: Any, timezone: str = "UTC") -> Schedule:
        """A schedule from what a beat entry may give: crontab, seconds, timedelta, cron, or
        an APScheduler trigger (CronTrigger, IntervalTrigger, DateTrigger; its own zone)."""
        if isinstance(value, Schedule):
            return value
        if isinstance(value, crontab):
            return cls(cron=value.expression, day_or=False, timezone=timezone)
        if isinstance(value, dt.timedelta):
            return cls(interval=value.total_seconds(), timezone=timezone)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls(interval=float(value), timezone=timezone)
        if isinstance(value, str):
            return cls(cron=value, timezone=timezone)
        if triggers.is_trigger(value):
            return cls(**triggers.schedule_fields(value))
        raise InvalidSchedule(
            f"unsupported schedule {value!r}: give crontab(...), seconds, a timedelta, a "
            "cron string such as '*/15 * * * *', or an APScheduler trigger"
        )

    def next_after(self, instant: dt.datetime) -> dt.datetime | None:
        """The first tick strictly after ``instant``; None when there is none left."""
        tick: dt.datetime | None
        if self.interval is not None:
            step = dt.timedelta(seconds=self.interval)
            if self.start is None:
                tick = instant + step
            elif instant < self.start:
                tick = self.start
            else:
                tick = self.start + step * ((instant - self.start) // step + 1)
        elif self.cron is not None:
            if self.start is not None and instant < self.start:
                instant = self.start - dt.timedelta(microseconds=1)
            tick = next_cron_time(self.cron, instant, self.timezone, day_or=self.day_or)
        else:
            assert self.start is not None
            tick = self.start if self.start > instant else None
        if tick is not None and self.end is not None and tick > self.end:
            return None
        return tick

    def latest_due(
        self, first_due: dt.datetime, now: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime | None]:
        """(the last tick at or before ``now``, the tick after it or None), from a due
        ``first_due``."""
        if self.end is not None and now > self.end:
            now = max(self.end, first_due)
        tick = first_due
        if self.interval is not None:
            step = dt.timedelta(seconds=self.interval)
            tick = first_due + step * max(0, math.floor((now - first_due) / step))
        elif self.cron is not None:
            # Jump close to now rather than step through, say, a week of missed minutes.
            jumped = _latest_cron_time(self.cron, now, self.timezone, self.day_or)
            if jumped is not None and jumped > tick:
                tick = jumped
        following = self.next_after(tick)
        while following is not None and following <= now:
            tick, following = following, self.next_after(following)
        return tick, following

    def describe(self) -> str:
        """One line for people: ``every 30s`` or ``cron '0 3 * * *' Europe/Berlin``, with
        its bounds (``from ... until ...``), or ``once at ...``."""
        if self.cron is None and self.interval is None:
            assert self.start is not None
            return f"once at {self.start.isoformat()}"
        if self.interval is not None:
            text = f"every {self.interval:g}s"
        else:
            assert self.cron is not None
            fields = _parse_cron(self.cron, self.day_or)
            both_days = "*" not in (fields[2], fields[4])
            mode = "" if self.day_or or not both_days else " (day of month and of week)"
            text = f"cron '{self.cron}' {self.timezone}{mode}"
        if self.start is not None:
            text += f" from {self.start.isoformat()}"
        if self.end is not None:
            text += f" until {self.end.isoformat()}"
        return text


__all__ = ["CronField", "InvalidSchedule", "Schedule", "check_cron", "crontab", "next_cron_time"]
