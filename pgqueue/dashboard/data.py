"""What the dashboard shows, read from the database into plain dataclasses.

No web here: each function takes a psycopg connection and returns data, so that every page
can be checked (and timed) without a browser. Where ``pgqueue.ops`` or ``pgqueue.beat``
already reads something, it is used as it is; the rest are the ``dashboard_*`` statements
of ``sql/queries.sql``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .. import beat, ops, queries, states
from ..beat import BrokenEntry, PeriodicEntry
from ..db import translate_errors
from ..sensitive import Sensitive

ALL_STATES = ops.LIVE_STATES + ops.FINISHED_STATES
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
NONE_HIDDEN = Sensitive()


class DashboardInputError(ops.OpsError):
    """A filter, cursor or id in a dashboard request that cannot be used; says which."""


# -- overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    """One queue on the overview: ``ops.QueueStats`` and whether it is paused."""

    stats: ops.QueueStats
    paused: bool

    @property
    def name(self) -> str:
        return self.stats.queue


@dataclass(frozen=True)
class Minute:
    """Results that finished within one minute."""

    minute: dt.datetime
    succeeded: int
    failed: int


def throughput(conn: psycopg.Connection[Any], queue: str | None = None) -> list[Minute]:
    """Successes and failures per minute over the last hour, oldest minute first (60)."""
    with translate_errors():
        rows = conn.execute(
            queries.get("dashboard_throughput"), {"queue": queue}, prepare=False
        ).fetchall()
    return [Minute(row[0], int(row[1]), int(row[2])) for row in rows]


def queue_rows(stats: Sequence[ops.QueueStats], paused: Iterable[str]) -> list[QueueRow]:
    """The overview's queue table: every queue of ``stats``, and paused queues with nothing
    in them (they are still worth seeing), by name."""
    held = set(paused)
    rows = {s.queue: QueueRow(s, s.queue in held) for s in stats}
    for name in held - set(rows):
        rows[name] = QueueRow(ops.QueueStats(name, 0, 0, 0, 0, 0, 0, 0, None, 0, 0), True)
    return [rows[name] for name in sorted(rows)]


# -- the jobs list -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a page of the jobs list starts: after the job ``id`` listed at ``at``."""

    at: dt.datetime
    id: str

    def encode(self) -> str:
        return f"{self.at.isoformat()}_{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        at, _, id_ = text.rpartition("_")
        try:
            when = dt.datetime.fromisoformat(at)
            uuid.UUID(id_)
        except ValueError:
            raise DashboardInputError(
                f"page cursor {text!r} is not one the dashboard made: start from the first page"
            ) from None
        if when.tzinfo is None:
            raise DashboardInputError(f"page cursor {text!r} has no time zone")
        return cls(when, id_)


# How many earlier pages a jobs page remembers for its "previous page" link (keyset paging
# cannot step back by itself: each page carries the starts of the pages before it).
TRAIL_PAGES = 20


def parse_trail(text: str | None) -> list[Cursor | None]:
    """The starts of the pages before this one, oldest first (None: the first page), from
    the ``back`` parameter the dashboard's own links carry."""
    if not text:
        return []
    return [Cursor.decode(part) if part != "-" else None for part in text.split(",")]


def encode_trail(trail: list[Cursor | None]) -> str:
    """``trail`` as the ``back`` parameter, keeping the newest TRAIL_PAGES starts."""
    return ",".join(c.encode() if c else "-" for c in trail[-TRAIL_PAGES:])


Pairs = list[tuple[str, str]]


def page_links(
    trail: list[Cursor | None], start: Cursor | None, following: Cursor | None
) -> tuple[Pairs | None, Pairs | None]:
    """The query parameters (besides the filter's) of the previous and the next page of the
    page that begins at ``start`` (None: the first) after the pages ``trail`` remembers;
    None where there is no such page. The next page remembers this one's start."""
    previous = None
    if trail:
        *before, back_to = trail
        previous = ([("after", back_to.encode())] if back_to else []) + (
            [("back", encode_trail(before))] if before else []
        )
    if following is None:
        return previous, None
    return previous, [("after", following.encode()), ("back", encode_trail([*trail, start]))]


@dataclass(frozen=True)
class JobFilter:
    """The jobs list's filters; empty ones select everything."""

    states: tuple[str, ...] = ()
    queue: str | None = None
    task: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str], states_given: Sequence[str] = ()) -> JobFilter:
        """From a request's query: ``state`` (repeated), ``queue``, ``task``, ``since`` and
        ``until`` (an ISO time, UTC when it names no zone, or an age: ``30m``, ``2h``,
        ``1d``), ``text``. Raises DashboardInputError naming the bad one."""
        wanted = [s.strip().upper() for s in states_given if s.strip()]
        bad = [s for s in wanted if s not in ALL_STATES]
        if bad:
            raise DashboardInputError(
                f"unknown state {', '.join(bad)}: choose from {', '.join(ALL_STATES)}"
            )
        return cls(
            states=tuple(dict.fromkeys(wanted)),
            queue=_text(params.get("queue")),
            task=_text(params.get("task")),
            since=parse_time(params.get("since"), "since"),
            until=parse_time(params.get("until"), "until"),
            text=_text(params.get("text")),
        )

    def query(self) -> list[tuple[str, str]]:
        """The filter as query parameters, for links to the next page."""
        pairs = [("state", s) for s in self.states]
        for key in ("queue", "task", "text"):
            value = getattr(self, key)
            if value:
                pairs.append((key, value))
        for key in ("since", "until"):
            value = getattr(self, key)
            if value is not None:
                pairs.append((key, value.isoformat()))
        return pairs


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str | None, what: str) -> dt.datetime | None:
    """An ISO time (UTC if it names no zone) or an age before now (``90s``, ``30m``,
    ``2h``, ``1d``); None for nothing given."""
    value = _text(value)
    if value is None:
        return None
    age = _AGE.fullmatch(value)
    if age:
        seconds = float(age.group(1)) * _AGE_UNITS[age.group(2)]
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise DashboardInputError(
            f"{what}={value!r} is not a time: give an ISO time (2026-01-31T12:00, UTC unless "
            "it names a zone) or an age (30m, 2h, 1d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@dataclass(frozen=True)
class JobLine:
    """One line of the jobs list. ``at``: when a live job was enqueued, or when a finished
    one finished (the list's order)."""

    id: str
    task_name: str
    queue: str
    state: str
    at: dt.datetime
    run_at: dt.datetime | None
    retries: int
    worker: str | None
    exc_type: str | None
    exc_message: str | None

    @property
    def live(self) -> bool:
        return self.state in ops.LIVE_STATES


@dataclass(frozen=True)
class JobPage:
    """A page of the jobs list, and where the next one starts (None: this is the last)."""

    lines: list[JobLine]
    next: Cursor | None
    filter: JobFilter = field(default_factory=JobFilter)


def list_jobs(
    conn: psycopg.Connection[Any],
    selection: JobFilter = JobFilter(),
    *,
    after: Cursor | None = None,
    limit: int = PAGE_SIZE,
    sensitive: Sensitive = NONE_HIDDEN,
) -> JobPage:
    """One page of jobs, newest first, after ``after`` (keyset paging: no OFFSET)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise DashboardInputError(f"a page holds 1 to {MAX_PAGE_SIZE} jobs, not {limit}")
    wanted = selection.states or ALL_STATES
    params = {
        "live_states": [s for s in wanted if s in ops.LIVE_STATES],
        "done_states": [s for s in wanted if s in ops.FINISHED_STATES],
        "queue": selection.queue,
        "task": selection.task,
        "since": selection.since,
        "until": selection.until,
        "text": selection.text,
        "hidden": sensitive.like_patterns(),
        "after_at": after.at if after else None,
        "after_id": after.id if after else None,
        # one more than a page: whether there is a next page, without counting
        "limit": limit + 1,
    }
    with translate_errors():
        rows = conn.execute(queries.get("dashboard_list_jobs"), params, prepare=False).fetchall()
    lines = [JobLine(str(r[0]), *r[1:]) for r in rows[:limit]]
    more = len(rows) > limit
    return JobPage(lines, Cursor(lines[-1].at, lines[-1].id) if more else None, selection)


# -- one job -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobDetail:
    """Everything the job page shows: ``ops.inspect`` of a live job or a stored result.
    ``args_hidden``: the task is sensitive, and ``args``/``kwargs`` are None."""

    id: str
    source: str
    task_name: str
    queue: str
    state: str
    args: Any
    kwargs: Any
    args_hidden: bool
    result: Any
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    retries: int
    max_retries: int | None
    priority: int | None
    timings: dict[str, Any]
    worker: str | None
    hostname: str | None
    pid: int | None
    options: dict[str, Any]

    @property
    def live(self) -> bool:
        return self.source == "jobs"

    @property
    def retryable(self) -> bool:
        return self.state in ops.RETRYABLE_STATES

    @property
    def revocable(self) -> bool:
        return self.state in ops.LIVE_STATES

    @property
    def running(self) -> bool:
        return self.state == states.STARTED


_TIMINGS = (
    "enqueued_at", "run_at", "expires_at", "claimed_at", "started_at", "date_started",
    "date_done", "time_taken",
)  # fmt: skip


def job_detail(
    conn: psycopg.Connection[Any],
    job_id: str,
    sensitive: Sensitive = NONE_HIDDEN,
) -> JobDetail | None:
    """The job ``job_id`` names (live or finished), or None when there is none."""
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise DashboardInputError(f"{job_id!r} is not a job id (a UUID)") from None
    found = ops.inspect(conn, job_id)
    if found is None:
        return None
    hidden = sensitive.hides(found["task_name"], found.get("kwargs"))
    return JobDetail(
        id=found["id"],
        source=found["source"],
        task_name=found["task_name"],
        queue=found["queue"],
        state=found["state"],
        args=None if hidden else found.get("args"),
        kwargs=None if hidden else found.get("kwargs"),
        args_hidden=hidden,
        result=found.get("result"),
        exc_type=found.get("exc_type"),
        exc_message=found.get("exc_message"),
        traceback=found.get("traceback"),
        retries=found.get("retries") or 0,
        max_retries=found.get("max_retries"),
        priority=found.get("priority"),
        timings={k: found[k] for k in _TIMINGS if found.get(k) is not None},
        worker=found.get("worker"),
        hostname=found.get("hostname"),
        pid=found.get("pid"),
        options=dict(found.get("options") or {}),
    )


@dataclass(frozen=True)
class WorkflowView:
    """One workflow of ``ops.workflow`` as the job page shows it: its own fields (kind, id,
    a chord's counter flattened to ``chord size``, ``chord remaining``...) and its members,
    in order, each as fields."""

    fields: dict[str, Any]
    members: list[dict[str, Any]]


def workflows(conn: psycopg.Connection[Any], job_id: str) -> list[WorkflowView]:
    """The workflows (chain, group, chord, and an enclosing chain) the job is part of,
    outermost first; none for a job in no workflow."""
    views = []
    for flow in ops.workflow(conn, job_id):
        fields: dict[str, Any] = {}
        for key, value in flow.items():
            if isinstance(value, Mapping):
                fields.update({f"{key} {k}": v for k, v in value.items()})
            elif key != "members":
                fields[key] = value
        views.append(WorkflowView(fields, [dict(m) for m in flow.get("members", ())]))
    return views


# -- periodic tasks ------------------------------------------------------------------------


def periodic_tasks(conn: psycopg.Connection[Any]) -> list[PeriodicEntry | BrokenEntry]:
    """Every row of ``pgqueue.periodic_tasks`` (a broken one says why), by name."""
    return beat.list_rows(conn)
