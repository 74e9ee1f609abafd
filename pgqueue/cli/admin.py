"""Commands that change the database: migrate, roles, purge, retry, revoke."""

from __future__ import annotations

import datetime as dt
import re
import sys
import uuid

import click

from .. import ops
from .. import roles as role_setup
from .common import (
    EXIT_NOT_FOUND,
    app_for,
    connected,
    json_flag,
    on_connection,
    ops_app_option,
    run,
)
from .formatting import echo_json, progress


@click.command()
@click.option("-A", "--app", "app_spec", help="module:app, for its DSN (optional).")
@click.pass_context
def migrate(ctx: click.Context, app_spec: str | None) -> None:
    """Create or upgrade the pgqueue schema in the database."""
    app = app_for(ctx, app_spec)
    applied = run(app.migrate)
    if applied:
        for m in applied:
            click.echo(f"applied {m.version:04d}_{m.name}")
    else:
        click.echo("schema is up to date")


@click.command()
@click.option(
    "--prefix",
    default="pgqueue",
    show_default=True,
    help="Role names: PREFIX_owner, PREFIX_producer, PREFIX_worker, PREFIX_operator.",
)
@click.option(
    "--apply",
    "apply_now",
    is_flag=True,
    help="Run it on the database (as a superuser) instead of printing it.",
)
@click.option("-A", "--app", "app_spec", help="module:app, for its DSN (optional).")
@click.pass_context
def roles(ctx: click.Context, prefix: str, apply_now: bool, app_spec: str | None) -> None:
    """Least-privilege roles for producers, workers, operators and the schema's owner.

    Prints sql/roles.sql (for a DBA, or `| psql -1 -f -`); with --apply, runs it. Either
    way it may be run again: it keeps existing roles and resets their privileges. After
    it, `pgqueue migrate` runs as the owner role and grants what new migrations create.
    """
    if not apply_now:
        click.echo(run(role_setup.script, prefix), nl=False)
        return
    names = on_connection(ctx, app_spec, role_setup.apply, prefix)
    owner = names["owner"]
    click.echo(f"roles ready: {', '.join(names.values())} (schema pgqueue owned by {owner})")
    click.echo(
        f"next, a login per component, e.g.: CREATE ROLE shop_web LOGIN PASSWORD '...' "
        f"IN ROLE {names['producer']};"
    )


@click.command()
@click.option("-Q", "--queue", "queues", multiple=True, help="Queue(s), repeatable or a,b.")
@click.option("-t", "--task", help="Only this task name.")
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["PENDING", "RETRY", "STARTED"], case_sensitive=False),
    help="PENDING and/or RETRY (default: both). Running jobs are never purged.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_flag
@ops_app_option
@click.pass_context
def purge(
    ctx: click.Context,
    queues: tuple[str, ...],
    task: str | None,
    states: tuple[str, ...],
    yes: bool,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """Delete queued jobs (all queues unless -Q), after asking unless --yes.

    Only jobs no worker has claimed are deleted: running and claimed (prefetched) jobs are
    left to finish; stop those with `pgqueue revoke --terminate`. Deleted jobs leave no
    result (their AsyncResult stays PENDING). Deletes in batches of 5,000, one transaction
    each, showing progress.
    """
    selection = run(
        ops.JobFilter,
        queues=_queue_list(queues),
        task=task,
        states=tuple(s.upper() for s in states) or ops.PURGEABLE_STATES,
    )
    with connected(app_for(ctx, app_spec)) as conn:
        count = run(ops.count_purgeable, conn, selection)
        if count and not yes:
            where = f" in {', '.join(selection.queues)}" if selection.queues else ""
            of = f" of {task}" if task else ""
            click.confirm(
                f"Delete {count:,} queued job(s){of}{where} ({'/'.join(selection.states)})?",
                abort=True,
                err=True,
            )
        purged = 0
        if count:
            with progress(count, "purged") as advance:
                purged = run(ops.purge, conn, selection, progress=advance)
    if as_json:
        echo_json({"purged": purged})
    else:
        click.echo(f"purged {purged:,} job(s)" if purged else "nothing to purge")


def _queue_list(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(q.strip() for v in values for q in v.split(",") if q.strip())


@click.command()
@click.argument("ids", nargs=-1, type=click.UUID)
@click.option("--failed", is_flag=True, help="Retry every FAILURE result the filters match.")
@click.option(
    "--revoked", is_flag=True, help="Retry REVOKED jobs too (the given ids, or all matching)."
)
@click.option("-Q", "--queue", help="Only this queue.")
@click.option("-t", "--task", help="Only this task name.")
@click.option("--since", help="Only jobs that finished within this age (30m, 2h, 1d) or time.")
@json_flag
@ops_app_option
@click.pass_context
def retry(
    ctx: click.Context,
    ids: tuple[uuid.UUID, ...],
    failed: bool,
    revoked: bool,
    queue: str | None,
    task: str | None,
    since: str | None,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """Queue failed jobs again: `retry ID...` or `retry --failed [-Q Q] [--since 1h]`.

    Only FAILURE results (and REVOKED ones with --revoked) can be retried: they keep their
    arguments. Each becomes a queued job under the same id, so AsyncResult(id) follows the
    new run, at priority 0 with the task's own limits and a fresh retry budget. A chain's
    failed step resumes its chain (its errback runs again if it fails again); a chord's
    member and a step that never ran are refused, with why.
    Bulk retries run in batches of 5,000, showing progress. Exit 3 when a given id could
    not be retried (the reason is on stderr).
    """
    if ids:
        retry_states = ("FAILURE", "REVOKED") if revoked else ("FAILURE",)
        report = on_connection(
            ctx, app_spec, ops.retry_ids, [str(i) for i in ids], retry_states=retry_states
        )
        _report_skipped(report, as_json, "retried")
        return
    if not (failed or revoked):
        raise click.UsageError("name job ids, or use --failed (and/or --revoked) to retry all")
    selection = run(
        ops.ResultFilter,
        states=tuple(s for s, on in (("FAILURE", failed), ("REVOKED", revoked)) if on),
        queue=queue,
        task=task,
        since=_parse_since(since),
    )
    with connected(app_for(ctx, app_spec)) as conn:
        plan = run(ops.plan_retry, conn, selection)
        retried = 0
        if plan.count:
            with progress(plan.count, "retried") as advance:
                retried = run(ops.retry_results, conn, plan, progress=advance)
    if as_json:
        echo_json({"retried": retried})
    else:
        click.echo(f"requeued {retried:,} job(s)" if retried else "nothing to retry")


def _parse_since(value: str | None) -> dt.timedelta | dt.datetime | None:
    """``30m``, ``2h``, ``1d`` (s, m, h, d, w) as a timedelta, or an ISO 8601 time
    (naive: UTC)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        return dt.timedelta(**{unit[match.group(2)]: float(match.group(1))})
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "give an age such as 30m, 2h or 1d, or a time such as 2026-01-31T12:00",
            param_hint="--since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


@click.command()
@click.argument("ids", nargs=-1, required=True, type=click.UUID)
@click.option(
    "--terminate",
    is_flag=True,
    help=(
        "Stop running jobs too (prefork kills the child, asyncio cancels the coroutine; "
        "other pools discard the outcome)."
    ),
)
@json_flag
@ops_app_option
@click.pass_context
def revoke(
    ctx: click.Context,
    ids: tuple[uuid.UUID, ...],
    terminate: bool,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """Revoke jobs: a queued, scheduled or claimed job never runs and ends REVOKED; a
    running one only with --terminate. Exit 3 when a given id was not revoked (why is on
    stderr: finished, running without --terminate, or unknown)."""
    app = app_for(ctx, app_spec)
    try:
        report = run(ops.revoke, app, [str(i) for i in ids], terminate=terminate)
    finally:
        app.close()
    _report_skipped(report, as_json, "revoked")


def _report_skipped(report: ops.Report, as_json: bool, verb: str) -> None:
    if as_json:
        echo_json({verb: report.done, "skipped": report.skipped})
    else:
        for job_id in report.done:
            click.echo(f"{verb} {job_id}")
    for job_id, why in report.skipped.items():
        click.echo(f"not {verb} {job_id}: {why}", err=True)
    if report.skipped:
        sys.exit(EXIT_NOT_FOUND)
