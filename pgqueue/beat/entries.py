"""What a periodic task is: an entry of ``pgqueue.periodic_tasks``, read from a row or from a
Celery-shaped ``beat_schedule`` item, checked so that a bad one is refused when it is read or
written rather than at its every tick."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..canvas import Signature
from ..exceptions import ConfigurationError, EncodeError
from ..options import SEND_OPTIONS
from ..schedules import InvalidSchedule, Schedule
from ..serialization import dumps_args
from ..shared import SharedTask
from ..task import Task

if TYPE_CHECKING:
    from ..app import PgQueue

CATCH_UP_POLICIES = ("once", "all")

# A beat-schedule entry's keys: Celery's, then pgqueue's own.
_SPEC_KEYS = {
    "task", "schedule", "args", "kwargs", "options",
    "timezone", "catch_up", "tick_kwarg",
}  # fmt: skip
# apply_async options kept in the options column: beat decides eta and task_id, and queue,
# priority and expires have columns of their own.
_ENTRY_OPTIONS = SEND_OPTIONS - {"eta", "task_id", "queue", "priority", "expires"}

# What each option's value must be, so that a wrong one is refused when the entry is read or
# written, not at its every tick. Null (None) is "not given", as for apply_async.
_NUMBER = (int, float)
_OPTION_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "countdown": (_NUMBER, "a number"),
    "max_retries": ((int,), "an integer"),
    "time_limit": (_NUMBER, "a number"),
    "soft_time_limit": (_NUMBER, "a number"),
    "ignore_result": ((bool,), "true or false"),
    "acks_late": ((bool,), "true or false"),
    "retry_backoff": ((bool, *_NUMBER), "true, false or a number"),
    "retry_backoff_max": (_NUMBER, "a number"),
    "retry_jitter": ((bool,), "true or false"),
    "default_retry_delay": (_NUMBER, "a number"),
}


@dataclass(frozen=True)
class PeriodicEntry:
    """One row of ``pgqueue.periodic_tasks``: what to send, when, and what happened so far."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    expires: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    catch_up: str = "once"
    tick_kwarg: str | None = None
    enabled: bool = True
    declared_in_code: bool = False
    next_run_at: dt.datetime | None = None
    last_run_at: dt.datetime | None = None
    total_run_count: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"a periodic task needs a non-empty name, got {self.name!r}")
        what = f"periodic task {self.name!r}"
        if not isinstance(self.task, str) or not self.task:
            raise ConfigurationError(f"{what}: 'task' must be a task name, got {self.task!r}")
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ConfigurationError(
                f"{what}: catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, "
                f"got {self.catch_up!r}"
            )
        if self.expires is not None and not self.expires > 0:
            raise ConfigurationError(f"{what}: expires must be positive seconds")
        if self.tick_kwarg is not None and not (
            isinstance(self.tick_kwarg, str) and self.tick_kwarg.isidentifier()
        ):
            raise ConfigurationError(
                f"{what}: tick_kwarg must name a keyword argument, got {self.tick_kwarg!r}"
            )
        unknown = set(self.options) - _ENTRY_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"{what}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(_ENTRY_OPTIONS))}"
            )
        for option, value in self.options.items():
            kinds, wanted = _OPTION_TYPES.get(option, ((object,), ""))
            # bool is an int to Python, not a number to a user
            if value is None:
                continue
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ConfigurationError(f"{what}: option {option} must be {wanted}, got {value!r}")
        dumps_args(self.task, self.args, self.kwargs)  # refuse what JSON cannot carry, now

    def row(self) -> dict[str, Any]:
        """Parameters for the statements that write an entry."""
        return {
            "name": self.name,
            "task_name": self.task,
            "cron": self.schedule.cron,
            "day_or": self.schedule.day_or,
            "interval_seconds": self.schedule.interval,
            "timezone": self.schedule.timezone,
            "start_at": self.schedule.start,
            "end_at": self.schedule.end,
            "args": json.dumps(list(self.args)),
            "kwargs": json.dumps(dict(self.kwargs)),
            "queue": self.queue,
            "priority": self.priority,
            "expires": self.expires,
            "options": json.dumps(dict(self.options)),
            "catch_up": self.catch_up,
            "tick_kwarg": self.tick_kwarg,
            "enabled": self.enabled,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PeriodicEntry:
        return cls(
            name=row["name"],
            task=row["task_name"],
            schedule=Schedule(
                cron=row["cron"],
                interval=row["interval_seconds"],
                timezone=row["timezone"],
                day_or=row["day_or"],
                start=row["start_at"],
                end=row["end_at"],
            ),
            args=tuple(row["args"]),
            kwargs=dict(row["kwargs"]),
            queue=row["queue"],
            priority=row["priority"],
            expires=row["expires"],
            options=dict(row["options"]),
            catch_up=row["catch_up"],
            tick_kwarg=row["tick_kwarg"],
            enabled=row["enabled"],
            declared_in_code=row["declared_in_code"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            total_run_count=row["total_run_count"],
        )

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], timezone: str = "UTC") -> PeriodicEntry:
        """An entry from a Celery-shaped ``beat_schedule`` item.

        ``{"task": "reports.nightly", "schedule": crontab(minute=0, hour=3), "args": (),
        "kwargs": {}, "options": {"queue": "reports", "expires": 3600}}``, plus pgqueue's
        ``timezone``, ``catch_up`` (``"once"`` or ``"all"``) and ``tick_kwarg``.
        """
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"beat_schedule[{name!r}] must be a dict, got {spec!r}")
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ConfigurationError(
                f"beat_schedule[{name!r}]: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_SPEC_KEYS))}"
            )
        if "task" not in spec or "schedule" not in spec:
            raise ConfigurationError(f"beat_schedule[{name!r}] needs 'task' and 'schedule'")
        options = dict(spec.get("options") or {})
        expires = options.pop("expires", None)
        if isinstance(expires, dt.timedelta):
            expires = expires.total_seconds()
        if expires is not None and not isinstance(expires, int | float):
            raise ConfigurationError(
                f"periodic task {name!r}: expires must be seconds or a timedelta (relative to "
                f"each tick), got {expires!r}"
            )
        args = spec.get("args") or ()
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise ConfigurationError(f"periodic task {name!r}: args must be a list or tuple")
        try:
            schedule = Schedule.parse(spec["schedule"], spec.get("timezone") or timezone)
        except InvalidSchedule as exc:
            raise InvalidSchedule(f"periodic task {name!r}: {exc}") from None
        return cls(
            name=name,
            task=spec["task"],
            schedule=schedule,
            args=tuple(args),
            kwargs=dict(spec.get("kwargs") or {}),
            queue=options.pop("queue", None),
            priority=options.pop("priority", None),
            expires=float(expires) if expires is not None else None,
            options=options,
            catch_up=spec.get("catch_up", "once"),
            tick_kwarg=spec.get("tick_kwarg"),
        )


def declared_entries(app: PgQueue) -> list[PeriodicEntry]:
    """The entries the app's code declares (``beat_schedule``), validated, sorted by name."""
    schedule = app.conf.beat_schedule or {}
    if not isinstance(schedule, Mapping):
        raise ConfigurationError("beat_schedule must be a dict of name -> entry")
    zone = app.conf.timezone or "UTC"
    return [PeriodicEntry.from_spec(name, schedule[name], zone) for name in sorted(schedule)]


def periodic_task_spec(
    schedule: Any,
    sig: Task | Signature,
    args: Sequence[Any] = (),
    kwargs: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """The ``beat_schedule`` item for ``app.add_periodic_task`` (validated by the caller)."""
    if isinstance(sig, SharedTask):
        sig = sig._get_current_object()
    if isinstance(sig, Task):
        task, sig_args, sig_kwargs, sig_options = sig.name, (), {}, {}
    elif isinstance(sig, Signature):
        task, sig_args, sig_kwargs, sig_options = sig.task, sig.args, sig.kwargs, sig.options
    else:
        raise ConfigurationError(f"add_periodic_task wants a task or a signature, got {sig!r}")
    spec: dict[str, Any] = {
        "task": task,
        "schedule": schedule,
        "args": tuple(sig_args) + tuple(args or ()),
        "kwargs": {**sig_kwargs, **dict(kwargs or {})},
    }
    for key in ("timezone", "catch_up", "tick_kwarg"):
        if key in options:
            spec[key] = options.pop(key)
    spec["options"] = {**sig_options, **options}
    return spec


@dataclass(frozen=True)
class BrokenEntry:
    """A row of ``pgqueue.periodic_tasks`` that is no usable entry (edited by hand: a cron
    expression croniter rejects, an unknown time zone, an option of the wrong type...),
    with why. Beat leaves it alone; fix the row, or remove it."""

    name: str
    task: str
    reason: str
    enabled: bool
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    total_run_count: int


def read_entry(row: Mapping[str, Any]) -> PeriodicEntry | BrokenEntry:
    """The entry of a periodic_tasks row, or a BrokenEntry saying what is wrong with it."""
    try:
        return PeriodicEntry.from_row(row)
    except (ConfigurationError, EncodeError, TypeError, ValueError) as exc:
        return BrokenEntry(
            name=row["name"],
            task=row["task_name"],
            reason=" ".join(str(exc).split()) or type(exc).__name__,
            enabled=row["enabled"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            total_run_count=row["total_run_count"],
        )
