"""Operating a queue: what it holds and does, and the fixes an operator makes by hand.

The library behind ``pgqueue status``, ``jobs``, ``inspect``, ``purge``, ``retry``,
``revoke`` and ``workers``, and the worker's queue metrics. Each function takes a psycopg
connection (autocommit, e.g. ``app.connect()``) and returns plain data; reads go through the
views of ``sql/migrations/0003_ops.sql``. Bulk changes run in batches, one short transaction
each, and report progress through a callback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from . import queries, states
from .db import translate_errors
from .exceptions import PgQueueError

if TYPE_CHECKING:
    from .app import PgQueue

LIVE_STATES = (states.PENDING, states.RETRY, states.STARTED)
FINISHED_STATES = (states.SUCCESS, states.FAILURE, states.REVOKED, states.IGNORED)
# Purge removes unclaimed jobs only: never one a worker holds, let alone a running one.
PURGEABLE_STATES = (states.PENDING, states.RETRY)
# Results that keep their arguments, so the job can run again.
RETRYABLE_STATES = (states.FAILURE, states.REVOKED)
BATCH_SIZE = 5000

Progress = Callable[[int], None]


class OpsError(PgQueueError, ValueError):
    """An operation was asked for something it does not do (e.g. purging running jobs)."""


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    """One row of ``pgqueue.queue_stats``; ``lag`` in seconds (None: nothing is ready)."""

    queue: str
    ready: int
    scheduled: int
    retrying: int
    reserved: int
    running: int
    failed_last_hour: int
    succeeded_last_hour: int
    lag: float | None
    unregistered: int
    workers: int


def queue_stats(conn: psycopg.Connection[Any]) -> list[QueueStats]:
    """Every queue with live jobs, recent results or a live worker, by name."""
    with translate_errors():
        rows = conn.execute(queries.get("ops_queue_stats"), prepare=False).fetchall()
    return [QueueStats(*row) for row in rows]


def sampled_queue_stats(conn: psycopg.Connection[Any], max_age: float) -> list[QueueStats]:
    """:func:`queue_stats` as sampled at most ``max_age`` seconds ago, shared by every
    caller: one of them computes the view for all, the others read the stored sample."""
    with translate_errors():
        rows = conn.execute(
            queries.get("ops_sampled_queue_stats"), {"max_age": max_age}, prepare=False
        ).fetchall()
    return [QueueStats(*row) for row in rows]


@dataclass(frozen=True)
class UnservedTask:
    """Jobs waiting for a task that no live worker consuming their queue has registered."""

    queue: str
    task_name: str
    jobs: int  # unclaimed jobs, due or not


def unserved_tasks(conn: psycopg.Connection[Any]) -> list[UnservedTask]:
    """Each (queue, task) whose unclaimed jobs no live worker can run, by queue and task:
    nobody runs them until a worker that imports the task and consumes the queue starts."""
    with translate_errors():
        rows = conn.execute(queries.get("ops_unserved_tasks"), prepare=False).fetchall()
    return [UnservedTask(*row) for row in rows]


@dataclass(frozen=True)
class WorkerStatus:
    """One row of ``pgqueue.worker_status``."""

    id: str
    name: str
    hostname: str
    pid: int
    queues: list[str]
    pool: str
    concurrency: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    alive: bool
    jobs_done: int
    running: int
    tasks: list[str]


def worker_status(conn: psycopg.Connection[Any]) -> list[WorkerStatus]:
    """Every registered worker (dead ones until a live worker's rescue removes them)."""
    with translate_errors():
        rows = conn.execute(queries.get("ops_worker_status")).fetchall()
    return [WorkerStatus(str(row[0]), *row[1:]) for row in rows]


@dataclass(frozen=True)
class JobSummary:
    """One line of a job listing: a live job, or a finished one from the results."""

    id: str
    task_name: str
    queue: str
    state: str
    priority: int | None
    retries: int
    run_at: dt.datetime | None
    started_at: dt.datetime | None
    date_done: dt.datetime | None
    worker: str | None
    exc_type: str | None
    exc_message: str | None


def list_jobs(
    conn: psycopg.Connection[Any],
    *,
    states: Iterable[str] | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int = 50,
) -> list[JobSummary]:
    """Up to ``limit`` jobs in ``states`` (default: the live ones), live jobs first (next
    due first), then finished ones (newest first)."""
    wanted = _states(states, LIVE_STATES + FINISHED_STATES) if states else list(LIVE_STATES)
    live = [s for s in wanted if s in LIVE_STATES]
    finished = [s for s in wanted if s in FINISHED_STATES]
    params = {"queue": queue, "task": task, "limit": limit}
    rows: list[Any] = []
    with translate_errors():
        if live:
            sql = queries.get("ops_list_jobs")
            rows += conn.execute(sql, {**params, "states": live}, prepare=False).fetchall()
        if finished and len(rows) < limit:
            sql = queries.get("ops_list_results")
            params["limit"] = limit - len(rows)
            rows += conn.execute(sql, {**params, "states": finished}, prepare=False).fetchall()
    return [JobSummary(str(row[0]), *row[1:]) for row in rows]


def inspect(conn: psycopg.Connection[Any], job_id: str) -> dict[str, Any] | None:
    """Everything stored about one job: its live row (with its worker) or its result (with
    the return value or the error and traceback); ``None`` when neither exists. The key
    ``source`` says which: "jobs" or "results"."""
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        # jobs first: a job finishing meanwhile has its result committed when the second
        # statement reads, so it cannot slip between the two.
        for source, query in (("jobs", "ops_inspect_job"), ("results", "ops_inspect_result")):
            row = cur.execute(queries.get(query), {"id": job_id}).fetchone()
            if row is not None:
                row["id"] = str(row["id"])
                if row.get("worker_id") is not None:
                    row["worker_id"] = str(row["worker_id"])
                return {"source": source, **row}
    return None


def workflow(conn: psycopg.Connection[Any], id: str) -> list[dict[str, Any]]:
    """The workflows ``id`` belongs to (as a chain's, group's or chord's id, a member, or a
    chord's callback), outermost chain included, oldest first: each a dict with ``id``,
    ``kind``, ``parent_id``, ``members`` (in order: ``position``, ``task_id``,
    ``task_name``, ``state``, ...) and, for a chord, ``chord`` (its counter). WAITING: a
    member not enqueued yet (what it follows has not finished)."""
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(queries.get("ops_workflows"), {"id": id}).fetchall()
    flows: dict[str, dict[str, Any]] = {}
    for row in rows:
        flow = flows.get(row["workflow_id"])
        if flow is None:
            flow = flows[row["workflow_id"]] = {
                "id": row["workflow_id"],
                "kind": row["kind"],
                "parent_id": row["parent_id"],
                "created_at": row["created_at"],
                "members": [],
            }
            if row["kind"] == "chord":
                flow["chord"] = {
                    "size": row["chord_size"],
                    "remaining": row["chord_remaining"],
                    "state": row["chord_state"],
                    "callback_id": row["chord_callback_id"],
                    "failed_member": row["chord_failed_member"],
                }
        flow["members"].append(
            {
                k: row[k]
                for k in (
                    "position",
                    "task_id",
                    "task_name",
                    "state",
                    "counted_at",
                    "exc_type",
                    "exc_message",
                )
            }
        )
    return list(flows.values())


def job_states(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, str]:
    """The state of each id that names a live job or a stored result."""
    with translate_errors():
        rows = conn.execute(queries.get("ops_job_states"), {"ids": list(ids)}).fetchall()
    return {str(r[0]): r[1] for r in rows}


# -- purge ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilter:
    """Which unclaimed jobs a purge takes: by queue (any of), task name and state."""

    queues: tuple[str, ...] = ()
    task: str | None = None
    states: tuple[str, ...] = PURGEABLE_STATES

    def __post_init__(self) -> None:
        bad = [s for s in self.states if s not in PURGEABLE_STATES]
        if bad:
            raise OpsError(
                f"cannot purge {', '.join(bad)} jobs: purge removes queued jobs only "
                f"({', '.join(PURGEABLE_STATES)}); running and claimed jobs are never purged "
                "(stop one with `pgqueue revoke ID --terminate`)"
            )

    def params(self) -> dict[str, Any]:
        return {
            "queues": list(self.queues) or None,
            "task": self.task,
            "states": list(self.states or PURGEABLE_STATES),
        }


def count_purgeable(conn: psycopg.Connection[Any], selection: JobFilter) -> int:
    """How many jobs ``purge`` would delete now."""
    with translate_errors():
        row = queries.one(conn.execute(queries.get("ops_count_purgeable"), selection.params()))
    return int(row[0])


def purge(
    conn: psycopg.Connection[Any],
    selection: JobFilter,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> int:
    """Delete the unclaimed jobs ``selection`` names, ``batch_size`` per transaction; returns
    how many. Their results stay PENDING (nothing is written for them), as in Celery."""
    params = {**selection.params(), "limit": batch_size}
    total = 0
    with translate_errors():
        while True:
            deleted = int(
                conn.execute(queries.get("ops_purge_jobs"), params, prepare=False).rowcount
            )
            total += deleted
            if progress is not None and deleted:
                progress(deleted)
            if deleted < batch_size:
                return total


# -- retry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultFilter:
    """Which stored results a bulk retry takes: by state, queue, task name, and finished at
    or after ``since`` (a time, or an age: that long ago)."""

    states: tuple[str, ...] = (states.FAILURE,)
    queue: str | None = None
    task: str | None = None
    since: dt.datetime | dt.timedelta | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.states if s not in RETRYABLE_STATES]
        if bad or not self.states:
            raise OpsError(
                f"cannot retry {', '.join(bad) or 'nothing'}: only "
                f"{' and '.join(RETRYABLE_STATES)} results keep their arguments and can be retried"
            )


@dataclass
class RetryPlan:
    """How many results a bulk retry will take, counted at ``until`` (the database's time):
    results written later, by requeued jobs failing again, are not taken again."""

    count: int
    until: dt.datetime
    selection: ResultFilter
    since: dt.datetime | None


def plan_retry(conn: psycopg.Connection[Any], selection: ResultFilter) -> RetryPlan:
    """Count what ``retry_results`` will requeue, and fix the moment it stops at."""
    with translate_errors():
        (until,) = queries.one(conn.execute(queries.get("ops_now")))
        since = selection.since
        if isinstance(since, dt.timedelta):
            since = until - since
        count = sum(
            int(
                queries.one(
                    conn.execute(
                        queries.get("ops_count_retryable"), _result_params(selection, state, since)
                    )
                )[0]
            )
            for state in selection.states
        )
    return RetryPlan(count, until, selection, since)


def retry_results(
    conn: psycopg.Connection[Any],
    plan: RetryPlan,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> int:
    """Requeue the results ``plan`` counted, ``batch_size`` per statement; returns how many.

    Each becomes a queued job under its own id, with its task, queue and arguments, at
    priority 0 with the task's own limits and retry policy, and a fresh retry budget.

    A workflow's job keeps its workflow: the REVOKED "not run" rows its failure wrote for
    the steps after it, and the results of its link_error targets, go in the same
    transaction, so that its success carries the chain on with its result and a new failure
    stops the chain again and runs its link_error again. Results whose retry could not
    carry their workflow on exactly once (see :func:`retry_ids`) are not taken, nor
    counted by :func:`plan_retry`."""
    total = 0
    with translate_errors():
        for state in plan.selection.states:
            params = {
                **_result_params(plan.selection, state, plan.since),
                "until": plan.until,
                "limit": batch_size,
            }
            while True:
                done = len(
                    conn.execute(queries.get("ops_retry_results"), params, prepare=False).fetchall()
                )
                total += done
                if progress is not None and done:
                    progress(done)
                if done < batch_size:
                    break
    return total


@dataclass
class Report:
    """What became of each id an operation was given: ``done`` ids, and a reason for each
    of the ``skipped`` ones."""

    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def retry_ids(
    conn: psycopg.Connection[Any],
    ids: Sequence[str],
    *,
    retry_states: Sequence[str] = (states.FAILURE,),
) -> Report:
    """Requeue the results of these ids that are in ``retry_states`` (FAILURE, and REVOKED
    when asked); the others are reported as skipped, with why.

    A step of a chain resumes the chain: see :func:`retry_results`. A chord's member, a
    chord's callback that failed before it ran, a step followed by a chord, and a step
    that never ran (REVOKED "not run") are refused, with why."""
    selection = ResultFilter(states=tuple(retry_states))
    ids = list(dict.fromkeys(str(i) for i in ids))
    report = Report()
    with translate_errors():
        (until,) = queries.one(conn.execute(queries.get("ops_now")))
        for state in selection.states:
            params = {
                **_result_params(selection, state, None),
                "ids": ids,
                "until": until,
                "limit": len(ids),
            }
            rows = conn.execute(queries.get("ops_retry_results"), params).fetchall()
            report.done += [str(r[0]) for r in rows]
        done = set(report.done)
        rest = [i for i in ids if i not in done]
        refused = conn.execute(queries.get("ops_retry_refusals"), {"ids": rest}).fetchall()
    # a workflow's job whose retry would not carry its workflow on exactly once says why,
    # whatever its state (a step that never ran stays refused with --revoked too)
    report.skipped.update({str(r[0]): r[1] for r in refused})
    _explain_skipped(conn, ids, report, lambda state: _why_not_retried(state, retry_states))
    return report


def _why_not_retried(state: str, retry_states: Sequence[str]) -> str:
    if state in LIVE_STATES:
        return f"is {state}, not finished"
    if state == states.REVOKED:
        return "is REVOKED: pass --revoked to retry revoked jobs"
    if state in RETRYABLE_STATES and state not in retry_states:
        return f"is {state}"
    if state in retry_states:
        # skipped by SKIP LOCKED: another retry of it has not committed yet
        return f"is {state}, and being retried by another session"
    return f"is {state}: only {' and '.join(RETRYABLE_STATES)} jobs can be retried"


# -- revoke --------------------------------------------------------------------------------


def revoke(app: PgQueue, ids: Sequence[str], *, terminate: bool = False) -> Report:
    """``app.control.revoke``, reporting why each id that was not revoked was not."""
    ids = list(dict.fromkeys(str(i) for i in ids))
    report = Report(done=app.control.revoke(ids, terminate=terminate))
    with app.connect() as conn:
        _explain_skipped(conn, ids, report, _why_not_revoked)
    return report


def _why_not_revoked(state: str) -> str:
    if state == states.STARTED:
        return "is running: pass --terminate to stop it"
    return f"already finished ({state})"


def _explain_skipped(
    conn: psycopg.Connection[Any], ids: Sequence[str], report: Report, why: Callable[[str], str]
) -> None:
    done = set(report.done)
    rest = [i for i in ids if i not in done and i not in report.skipped]
    found = job_states(conn, rest) if rest else {}
    for i in rest:
        report.skipped[i] = why(found[i]) if i in found else "no such job"


# -- helpers -------------------------------------------------------------------------------


def _states(given: Iterable[str], allowed: Sequence[str]) -> list[str]:
    wanted = [s.upper() for s in given]
    bad = [s for s in wanted if s not in allowed]
    if bad:
        raise OpsError(f"unknown state {', '.join(bad)}: choose from {', '.join(allowed)}")
    return list(dict.fromkeys(wanted))


def _result_params(
    selection: ResultFilter, state: str, since: dt.datetime | None
) -> dict[str, Any]:
    return {
        "state": state,
        "ids": None,
        "queue": selection.queue,
        "task": selection.task,
        "since": since,
    }
