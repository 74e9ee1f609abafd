"""A job's row, worked out from a call before anything is sent: its columns from the task,
the call's options, the routes and ``conf``, each checked so that the database never sees a
value it would refuse with a bare error. producer.py writes the rows this module builds."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .controls import check_unique_key, check_unique_until
from .exceptions import ConfigurationError, EncodeError, NotRegistered
from .ids import new_job_id
from .options import PER_CALL_OPTIONS, SEND_OPTIONS
from .serialization import as_json_types, check_size, compact_json, dumps_args, dumps_jobs
from .tracing import TRACE_OPTION

if TYPE_CHECKING:
    from .app import PgQueue
    from .canvas import Signature
    from .task import Task


def plan(
    app: PgQueue, signatures: Iterable[Signature], trace: dict[str, str] | None = None
) -> Iterator[tuple[str, Signature, dict[str, Any], tuple[Any, ...] | None]]:
    """Each call's job id and columns, and, for a job COPY can insert as it is (no
    countdown or expiry to work out on the database's clock), its copy_jobs values after
    task_name, args and kwargs (else None).

    What a job's row takes from its task and call options (queue, priority, limits...)
    is worked out once per distinct (task, options); only the id and arguments are new
    per job. Routes that are functions may look at the arguments: no reuse then."""
    routes = app.conf.task_routes
    tables = routes if isinstance(routes, list | tuple) else [routes] if routes else []
    reuse = not any(callable(t) for t in tables)
    shared: dict[Any, tuple[dict[str, Any], tuple[Any, ...] | None]] = {}
    for sig in signatures:
        key: Any = None
        known = None
        task = app.tasks.get(sig.task)
        # a key computed from the arguments makes each job's columns its own
        if reuse and "task_id" not in sig.options and not (task and task.controls.unique):
            try:
                key = (sig.task, frozenset(sig.options.items()))
                known = shared.get(key)
            except TypeError:  # an unhashable option value
                key = None
        if known is None:
            job_id, columns = job_columns(
                app, sig.task, sig.args, sig.kwargs, sig.options, trace=trace
            )
            known = columns, _copy_values(columns)
            if key is not None:
                shared[key] = known
        else:
            check_call(sig.task, sig.args, sig.kwargs)
            job_id = new_job_id()
        yield job_id, sig, known[0], known[1]


def job_columns(
    app: PgQueue,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: dict[str, Any],
    *,
    trace: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """A new job's id, and its row's columns other than id, args and kwargs: what its
    task, the call's options and the routes give (and ``trace``, the enqueue's trace
    context, in its options)."""
    check_call(name, args, kwargs)
    # None means "not given", except for max_retries, where None given means no limit.
    options = {k: v for k, v in options.items() if v is not None or k == "max_retries"}
    unknown = set(options) - SEND_OPTIONS
    if unknown & {"link", "link_error"}:
        raise TypeError(
            f"{name}: link and link_error are taken by apply_async, send_task, "
            "Signature.apply_async and their async twins (which write the workflow), not "
            "by enqueue_many, aenqueue_many or beat"
        )
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {', '.join(sorted(unknown))}")
    task = app.tasks.get(name)
    route = app.route(name, args, kwargs)

    eta = options.get("eta")
    countdown = options.get("countdown")
    if eta is not None and countdown is not None:
        raise TypeError(f"{name}: give eta or countdown, not both")
    run_at, countdown, expires_at, expires_in = _times(
        name,
        eta,
        countdown,
        options.get("expires", task.expires if task else None),
        app.conf.timezone or "UTC",
    )
    per_call = {k: options[k] for k in PER_CALL_OPTIONS if k in options}
    if "acks_late" in per_call:
        # stored as a JSON boolean: the claim and the hand-off ignore anything else
        per_call["acks_late"] = bool(per_call["acks_late"])
    if "max_retries" in options and options["max_retries"] is None:
        # The column's NULL means the task's default, so "no limit" is kept here.
        per_call["max_retries"] = None
    if eta is not None or countdown is not None:
        # So that request.eta is None for a job sent to run at once, as in Celery.
        per_call["scheduled"] = True
    if trace:
        per_call[TRACE_OPTION] = trace
    task_id = options.get("task_id")
    job_id = str(uuid.UUID(str(task_id))) if task_id else new_job_id()
    columns = {
        "task_name": name,
        "queue": options.get("queue")
        or route.get("queue")
        or (task.queue if task else None)
        or app.conf.task_default_queue,
        "priority": _first(
            options.get("priority"),
            route.get("priority"),
            task.priority if task else None,
            app.conf.task_default_priority,
        ),
        "run_at": run_at,
        "countdown": countdown,
        "expires_at": expires_at,
        "expires_in": expires_in,
        "max_retries": options.get("max_retries"),
        "time_limit": options.get("time_limit"),
        "soft_time_limit": options.get("soft_time_limit"),
        "options": per_call,
    }
    _check_columns(columns)
    _unique(name, args, kwargs, options, task, columns)
    for what in ("task_name", "queue"):
        # COPY would pass these on to the database (or the driver), which refuse them
        # with a bare error.
        value = columns[what]
        if isinstance(value, str) and ("\x00" in value or not _utf8(value)):
            raise EncodeError(
                f"{name!r}: the {what} {value!r} contains a NUL character (\\x00) or a "
                "lone surrogate, which Postgres cannot store"
            )
    return job_id, columns


def _unique(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: dict[str, Any],
    task: Task | None,
    columns: dict[str, Any],
) -> None:
    """Add the job's unique key and unique_until to ``columns``, if it has one: the call's
    ``unique_key``, else the one the task's ``unique=`` makes of the arguments."""
    key = options.get("unique_key")
    if key is None and task is not None:
        key = task.controls.unique_key(name, args, kwargs)
    if key is None:
        if "unique_until" in options:
            raise TypeError(f"{name}: unique_until= needs a unique key (unique_key=)")
        return
    columns["unique_key"] = check_unique_key(name, key)
    columns["unique_until"] = check_unique_until(
        name, options.get("unique_until", task.controls.unique_until if task else "started")
    )


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _times(
    name: str,
    eta: dt.datetime | None,
    countdown: float | None,
    expires: float | dt.timedelta | dt.datetime | None,
    zone: str,
) -> tuple[str | None, float | None, str | None, float | None]:
    """A call's run_at and expires_at columns (absolute, as ISO text in UTC) or their
    countdown and expires_in (seconds, worked out on the database's clock).

    Naive datetimes are in ``zone`` (conf.timezone), where Celery reads a naive eta too. A
    time outside the years 1-9999 in UTC is refused with a ValueError, before anything is
    written. An expiry before the eta is kept, as in Celery: the job ends REVOKED without
    running.
    """
    run_at = _utc(name, "eta", eta, zone) if eta is not None else None
    if countdown is not None:
        countdown = _seconds(name, "countdown", countdown)
    expires_at = expires_in = None
    if isinstance(expires, dt.datetime):
        expires_at = _utc(name, "expires", expires, zone)
    elif isinstance(expires, dt.timedelta):
        expires_in = _seconds(name, "expires", expires.total_seconds())
    elif expires is not None:
        expires_in = _seconds(name, "expires", expires)
    return (
        run_at.isoformat() if run_at is not None else None,
        countdown,
        expires_at.isoformat() if expires_at is not None else None,
        expires_in,
    )


def _utc(name: str, what: str, when: object, zone: str) -> dt.datetime:
    if not isinstance(when, dt.datetime):
        raise TypeError(f"{name}: {what} must be a datetime, got {type(when).__name__}")
    try:
        if when.tzinfo is None:
            when = when.replace(tzinfo=_zone(zone))
        return when.astimezone(dt.timezone.utc)
    except OverflowError:
        raise ValueError(
            f"{name}: {what}={when!r} is outside the years 1-9999 in UTC, which pgqueue "
            "cannot store"
        ) from None


def _seconds(name: str, what: str, value: Any) -> float:
    """Seconds from now, refused unless the time they give is one pgqueue can store."""
    try:
        seconds = float(value)
        dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"{name}: {what}={value!r} is not a number of seconds giving a time within the "
            "years 1-9999"
        ) from None
    return seconds


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigurationError(
            f"conf.timezone={name!r} is not a time zone name (such as 'UTC' or "
            "'Europe/Paris'); naive datetimes are read in it"
        ) from None


def job(
    job_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], columns: dict[str, Any]
) -> dict[str, Any]:
    """One job of an enqueue_jobs document: ``columns`` with its id and arguments."""
    job = dict(columns)
    job["id"] = job_id
    job["args"], job["kwargs"] = as_json_types(args, kwargs)
    return job


def call_document(
    app: PgQueue,
    name: str,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
    trace: dict[str, str] | None = None,
) -> tuple[str, str, str]:
    """One call's job id, its enqueue document, and the name of the statement that
    enqueues it (``send_task``); ``trace``: the enqueue's trace context."""
    args, kwargs = args or (), kwargs or {}
    job_id, columns = job_columns(app, name, args, kwargs, options, trace=trace)
    jobs = [job(job_id, args, kwargs, columns)]
    return job_id, document(jobs, app.conf.task_max_payload_size), statement(jobs)


def statement(jobs: list[dict[str, Any]]) -> str:
    """The statement enqueueing ``jobs`` in one go: enqueue_unique_jobs (which returns the
    ids, some perhaps of jobs holding the keys already) if one has a unique key, else
    enqueue_jobs."""
    return UNIQUE_STATEMENT if any("unique_key" in j for j in jobs) else "enqueue_jobs"


UNIQUE_STATEMENT = "enqueue_unique_jobs"


def batch_document(
    app: PgQueue, signatures: Iterable[Signature], trace: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The jobs of many calls and their one enqueue document (None for no calls)."""
    jobs = [job(i, sig.args, sig.kwargs, c) for i, sig, c, _ in plan(app, signatures, trace)]
    return jobs, document(jobs, app.conf.task_max_payload_size) if jobs else None


def document(jobs: list[dict[str, Any]], limit: int | None) -> str:
    """``jobs`` as one enqueue_jobs document, each job's arguments checked against
    ``limit`` (conf.task_max_payload_size)."""
    encoded = dumps_jobs(jobs)
    check_payloads(jobs, encoded, limit)
    return encoded


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_payloads(jobs: list[dict[str, Any]], document: str, limit: int | None) -> None:
    """Refuse a job whose arguments are over ``limit`` bytes; ``document`` holds the jobs
    encoded, so that a batch under the limit as a whole costs nothing more."""
    if limit is None or len(document) <= limit:
        return
    for job in jobs:
        args_json, kwargs_json = dumps_args(job["task_name"], job["args"], job["kwargs"])
        check_size(job["task_name"], "its arguments", len(args_json) + len(kwargs_json), limit)


def _copy_values(columns: dict[str, Any]) -> tuple[Any, ...] | None:
    """A job's copy_jobs values after task_name, args and kwargs; None if its run_at or
    expires_at must be worked out on the database's clock (or are given: COPY leaves run_at
    to its default, the transaction's start, as enqueue_jobs does)."""
    if any(columns[k] is not None for k in ("run_at", "countdown", "expires_at", "expires_in")):
        return None
    if "unique_key" in columns:  # COPY cannot skip a job whose key is taken
        return None
    try:
        options = compact_json(columns["options"])
    except (TypeError, ValueError) as exc:
        name = columns["task_name"]
        raise EncodeError(f"{name}: the call's options cannot be stored: {exc}") from exc
    return (
        columns["queue"],
        columns["priority"],
        columns["max_retries"],
        columns["time_limit"],
        columns["soft_time_limit"],
        options,
    )


def check_call(name: str, args: Any, kwargs: Any) -> None:
    if type(args) in (tuple, list) and type(kwargs) is dict and type(name) is str and name:
        return  # the usual call, without the slower checks against abstract types
    if not isinstance(name, str) or not name:
        raise NotRegistered(f"task name must be a non-empty string, got {name!r}")
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(f"{name}: args must be a list or tuple, got {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{name}: kwargs must be a dict, got {type(kwargs).__name__}")


# The jobs.priority column is an integer (int4).
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
# Longest queue or task name, in bytes of UTF-8. A queue name is a key of btree indexes
# (an entry must stay under 2,704 bytes) and the payload of a NOTIFY (under 8,000 bytes);
# a name is an identifier, so the limit is set well below both.
NAME_MAX_BYTES = 1000


def _check_columns(columns: dict[str, Any]) -> None:
    """Refuse a priority or name the jobs table cannot take, before anything is sent."""
    name = columns["task_name"]
    priority = columns["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(
            f"{_short(name)}: priority must be an integer from {PRIORITY_MIN} to "
            f"{PRIORITY_MAX} (higher runs first), got {_short(priority)}"
        )
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(
            f"{_short(name)}: priority {priority} is out of range: it must be from "
            f"{PRIORITY_MIN} to {PRIORITY_MAX} (higher runs first)"
        )
    for what, value in (("task name", name), ("queue name", columns["queue"])):
        about = "" if what == "task name" else f"{_short(name)}: "
        if not isinstance(value, str) or not value:
            raise TypeError(f"{about}the {what} must be a non-empty string, got {_short(value)}")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > NAME_MAX_BYTES:
            raise ValueError(
                f"{about}the {what} {_short(value)} is {size} bytes long; names may be at "
                f"most {NAME_MAX_BYTES} bytes (UTF-8)"
            )


def _short(value: Any) -> str:
    """``repr(value)``, cut to keep a message about an over-long value readable."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(text)} chars)"
