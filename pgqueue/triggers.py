"""APScheduler 3 triggers as beat schedules: ``CronTrigger`` (``from_crontab`` too),
``IntervalTrigger`` and ``DateTrigger``, converted to the fields of a periodic_tasks row
where the conversion is exact, refused with the reason where it is not.

APScheduler is imported only when such an object is given (pgqueue[apscheduler]); this
module reads the trigger's public attributes and compiled fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .exceptions import InvalidSchedule

# APScheduler's largest value of each cron field, for a range "5/15" that runs to the end.
_MAX = {"month": 12, "day": 31, "hour": 23, "minute": 59, "second": 59}


def is_trigger(value: Any) -> bool:
    """Whether ``value`` is an APScheduler trigger (checked without importing APScheduler)."""
    return type(value).__module__.startswith("apscheduler.triggers")


def zone_name(zone: Any) -> str:
    """The IANA name of an APScheduler trigger's zone (zoneinfo, pytz or a UTC offset)."""
    name = getattr(zone, "key", None) or getattr(zone, "zone", None)
    if isinstance(name, str) and name and name != "localtime":
        return name
    if isinstance(zone, dt.timezone):
        offset = zone.utcoffset(None)
        hours, rest = divmod(offset, dt.timedelta(hours=1))
        if not rest:
            # Etc/GMT's sign is POSIX's: Etc/GMT-2 is two hours ahead of UTC.
            return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
    raise InvalidSchedule(
        f"the trigger's time zone {zone!r} has no IANA name: give the trigger "
        "timezone='Europe/Berlin' (or another IANA name)"
    )


def schedule_fields(trigger: Any) -> dict[str, Any]:
    """The keyword arguments of ``pgqueue.schedules.Schedule`` for an APScheduler trigger."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if getattr(trigger, "jitter", None):
        raise InvalidSchedule(
            f"{trigger!r}: jitter cannot be represented: beat sends each tick at its time, "
            "once across the cluster; leave jitter out (or wait a random time in the task)"
        )
    if isinstance(trigger, DateTrigger):
        return {"start": trigger.run_date, "timezone": zone_name(trigger.run_date.tzinfo)}
    if isinstance(trigger, IntervalTrigger):
        return {
            "interval": trigger.interval.total_seconds(),
            "start": trigger.start_date,
            "end": trigger.end_date,
            "timezone": zone_name(trigger.timezone),
        }
    if isinstance(trigger, CronTrigger):
        return {
            "cron": cron_expression(trigger),
            # APScheduler runs only at times matching every field, day and weekday alike
            "day_or": False,
            "start": trigger.start_date,
            "end": trigger.end_date,
            "timezone": zone_name(trigger.timezone),
        }
    raise InvalidSchedule(
        f"{trigger!r}: only APScheduler's CronTrigger, IntervalTrigger and DateTrigger can "
        "be beat schedules; declare one entry per trigger of a combination"
    )


def cron_expression(trigger: Any) -> str:
    """The cron expression (minute hour day month weekday [second]) of a CronTrigger."""
    fields = {field.name: field for field in trigger.fields}
    for name, fix in (
        ("year", "bound the years with start_date and end_date instead"),
        ("week", "ISO week numbers have no cron equivalent"),
    ):
        if str(fields[name]) != "*":
            raise InvalidSchedule(f"{trigger!r}: {name}={str(fields[name])!r}: {fix}")
    parts = [_field(fields[name]) for name in ("minute", "hour", "day", "month")]
    parts.append(_weekdays(fields["day_of_week"]))
    second = str(fields["second"])
    if second != "0":
        parts.append(_field(fields["second"]))
    return " ".join(parts)


def _field(field: Any) -> str:
    parts = []
    for expression in field.expressions:
        kind = type(expression).__name__
        if kind == "AllExpression":
            parts.append(f"*/{expression.step}" if expression.step else "*")
        elif kind in ("RangeExpression", "MonthRangeExpression"):
            first, last, step = expression.first, expression.last, expression.step
            if last is None:
                last = _MAX[field.name]
            text = str(first) if last == first else f"{first}-{last}"
            parts.append(f"{text}/{step}" if step else text)
        elif kind == "LastDayOfMonthExpression":
            parts.append("L")
        else:
            raise InvalidSchedule(
                f"{field.name}={str(expression)!r} has no cron equivalent pgqueue can run"
            )
    return ",".join(parts)


def _weekdays(field: Any) -> str:
    """Weekdays in cron's numbering (0 is Sunday) from APScheduler's (0 is Monday)."""
    days: set[int] = set()
    for expression in field.expressions:
        kind = type(expression).__name__
        step = getattr(expression, "step", None) or 1
        if kind == "AllExpression":
            days.update(range(0, 7, step))
        elif kind in ("RangeExpression", "WeekdayRangeExpression"):
            last = expression.last
            if last is None:
                last = 6 if expression.step else expression.first
            days.update(range(expression.first, last + 1, step))
        else:
            raise InvalidSchedule(f"day_of_week={str(expression)!r} has no cron equivalent")
    if len(days) == 7:
        return "*"
    return ",".join(str(d) for d in sorted((day + 1) % 7 for day in days))
