"""Commands that only read: status, workers, jobs, inspect, result."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sys
import time
import uuid
from typing import Any

import click
import psycopg

from .. import ops, queue_controls
from ..exceptions import TimeoutError as WaitTimeout
from ..result import AsyncResult
from .common import (
    EXIT_NOT_FOUND,
    EXIT_NOT_READY,
    EXIT_UNSUCCESSFUL,
    app_for,
    connected,
    json_flag,
    on_connection,
    ops_app_option,
    run,
)
from .formatting import (
    ago,
    echo_fields,
    echo_json,
    echo_workflow,
    error,
    seconds,
    table,
    when,
)


@click.command()
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option(
    "-n",
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@json_flag
@ops_app_option
@click.pass_context
def status(
    ctx: click.Context, watch: bool, interval: float, as_json: bool, app_spec: str | None
) -> None:
    """Per queue: ready, scheduled, retrying, reserved and running jobs, failures and
    successes in the last hour, lag (age of the oldest ready job), and jobs no live worker
    can run: the pgqueue.queue_stats view; and which queues are paused. --watch --json
    prints one JSON line per refresh."""
    with connected(app_for(ctx, app_spec)) as conn:
        try:
            while True:
                stats = run(ops.queue_stats, conn)
                paused = run(queue_controls.paused_queues, conn)
                if as_json:
                    echo_json(
                        [{**dataclasses.asdict(s), "paused": s.queue in paused} for s in stats],
                        compact=watch,
                    )
                else:
                    unserved = run(ops.unserved_tasks, conn)
                    if watch:
                        click.clear()
                        now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
                        click.echo(f"Every {interval:g}s: pgqueue status    {now}\n")
                    click.echo(_status_table(stats))
                    if paused:
                        click.echo(
                            f"\nPaused (nothing is claimed from them until `pgqueue queue "
                            f"resume NAME`): {', '.join(paused)}"
                        )
                    if unserved:
                        click.echo(_unserved_table(unserved))
                if not watch:
                    return
                sys.stdout.flush()
                time.sleep(interval)
        except KeyboardInterrupt:
            return


def _status_table(stats: list[ops.QueueStats]) -> str:
    if not stats:
        return "no queues: no live jobs, no results in the last hour, no live workers"
    header = (
        "QUEUE",
        "READY",
        "SCHEDULED",
        "RETRYING",
        "RESERVED",
        "RUNNING",
        "FAILED/1h",
        "SUCCEEDED/1h",
        "LAG",
        "UNREGISTERED",
        "WORKERS",
    )
    rows = [
        (
            s.queue,
            f"{s.ready:,}",
            f"{s.scheduled:,}",
            f"{s.retrying:,}",
            f"{s.reserved:,}",
            f"{s.running:,}",
            f"{s.failed_last_hour:,}",
            f"{s.succeeded_last_hour:,}",
            seconds(s.lag),
            f"{s.unregistered:,}",
            str(s.workers),
        )
        for s in stats
    ]
    return table(header, rows)


def _unserved_table(unserved: list[ops.UnservedTask]) -> str:
    rows = [(u.queue, u.task_name, f"{u.jobs:,}") for u in unserved]
    return (
        "\nNo live worker runs these tasks (their jobs wait until a worker that imports the "
        "task and consumes the queue starts):\n" + table(("QUEUE", "TASK", "JOBS"), rows)
    )


@click.command()
@json_flag
@ops_app_option
@click.pass_context
def workers(ctx: click.Context, as_json: bool, app_spec: str | None) -> None:
    """Registered workers: host, pid, queues, pool, running and done jobs, heartbeat, and
    whether each is alive (the pgqueue.worker_status view)."""
    found = on_connection(ctx, app_spec, ops.worker_status)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no workers")
        return
    header = (
        "NAME",
        "HOST",
        "PID",
        "QUEUES",
        "POOL",
        "CONCURRENCY",
        "RUNNING",
        "DONE",
        "STARTED",
        "HEARTBEAT",
        "ALIVE",
    )
    rows = [
        (
            w.name,
            w.hostname,
            str(w.pid),
            ",".join(w.queues),
            w.pool,
            str(w.concurrency),
            str(w.running),
            f"{w.jobs_done:,}",
            when(w.started_at),
            ago(w.heartbeat_at),
            "yes" if w.alive else "NO",
        )
        for w in found
    ]
    click.echo(table(header, rows))


_ALL_STATES = ("PENDING", "RETRY", "STARTED", "SUCCESS", "FAILURE", "REVOKED", "IGNORED")


@click.command()
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_ALL_STATES, case_sensitive=False),
    help="Repeatable (default: the live states PENDING, RETRY, STARTED).",
)
@click.option("-Q", "--queue", help="Only this queue.")
@click.option("-t", "--task", help="Only this task name.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_flag
@ops_app_option
@click.pass_context
def jobs(
    ctx: click.Context,
    states: tuple[str, ...],
    queue: str | None,
    task: str | None,
    limit: int,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """List jobs: live ones next due first, then finished ones newest first."""
    found = on_connection(
        ctx, app_spec, ops.list_jobs, states=states, queue=queue, task=task, limit=limit
    )
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no jobs")
        return
    header = ("ID", "TASK", "QUEUE", "STATE", "RETRIES", "RUN AT / DONE", "WORKER", "ERROR")
    rows = [
        (
            j.id,
            j.task_name,
            j.queue,
            j.state,
            str(j.retries),
            when(j.date_done or j.run_at),
            j.worker or "-",
            error(j.exc_type, j.exc_message),
        )
        for j in found
    ]
    click.echo(table(header, rows))


@click.command()
@click.argument("job_id", metavar="ID", type=click.UUID)
@json_flag
@ops_app_option
@click.pass_context
def inspect(ctx: click.Context, job_id: uuid.UUID, as_json: bool, app_spec: str | None) -> None:
    """Everything about one job: its row, its worker, its result or error and traceback;
    and the workflows (chain, group, chord) it is part of, members in order with their
    states and a chord's counter. ID may also be a group's or a chord's id."""
    found, flows = on_connection(ctx, app_spec, _job_and_workflows, str(job_id))
    if found is None and not flows:
        click.echo(f"no job or result (nor workflow) with id {job_id}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    if as_json:
        echo_json({**(found or {}), **({"workflows": flows} if flows else {})})
        return
    if found is not None:
        echo_fields(found)
    for flow in flows:
        echo_workflow(flow)


def _job_and_workflows(
    conn: psycopg.Connection[Any], id: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    return ops.inspect(conn, id), ops.workflow(conn, id)


@click.command()
@click.argument("job_id", metavar="ID", type=click.UUID)
@click.option(
    "--timeout", type=click.FloatRange(min=0), help="Wait up to this many seconds for it."
)
@json_flag
@ops_app_option
@click.pass_context
def result(
    ctx: click.Context,
    job_id: uuid.UUID,
    timeout: float | None,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """Print a task's return value (JSON). Exit 0: SUCCESS; 3: no such job; 4: not finished
    (yet, or within --timeout); 5: FAILURE, REVOKED or IGNORED (the error on stderr)."""
    if timeout:
        app = app_for(ctx, app_spec)
        try:
            run(_wait, AsyncResult(str(job_id), app=app), timeout)
        finally:
            app.close()
    found = on_connection(ctx, app_spec, ops.inspect, str(job_id))
    if found is None:
        click.echo(f"no job or result with id {job_id}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    state = found["state"]
    if as_json:
        keys = ("id", "task_name", "state", "result", "exc_type", "exc_message", "traceback")
        echo_json({k: found.get(k) for k in keys} | {"date_done": found.get("date_done")})
    elif state == "SUCCESS":
        echo_json(found["result"], compact=True)
    else:
        line = f"task {job_id} is {state}"
        if found.get("exc_type"):
            line += f": {found['exc_type']}: {found.get('exc_message') or ''}"
        click.echo(line, err=True)
        if state == "FAILURE" and found.get("traceback"):
            click.echo(found["traceback"].rstrip(), err=True)
    if state in ("PENDING", "STARTED", "RETRY"):
        sys.exit(EXIT_NOT_READY)
    if state != "SUCCESS":
        sys.exit(EXIT_UNSUCCESSFUL)


def _wait(pending: AsyncResult, timeout: float) -> None:
    """Until the job finishes or ``timeout`` passes; either way the caller reads it after."""
    with contextlib.suppress(WaitTimeout):
        pending.get(timeout=timeout, propagate=False)
