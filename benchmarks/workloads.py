"""The workloads: each runs one system a few times and returns rows for the table."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import limit
from .common import DrainRun, Row, Scale, Skip, percentile, running, wait_until
from .systems import CPU, IGNORE_RESULT, RESULTS, System, WorkerConfig
from .systems.pgqueue import ASYNC_IGNORE_RESULT, ASYNC_RESULTS, Pgqueue

# The pseudo-system under which the pgbench ceiling is reported.
POSTGRES = limit.PostgresServer.name


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[Any, Scale], list[Row]]
    # The systems it applies to; None: every queue (not the pgbench pseudo-system).
    only: tuple[str, ...] | None = None


def _reps(scale: Scale) -> range:
    return range(1, scale.reps + 1)


def _rate_row(workload: str, system: System, config: str, values: list[float]) -> Row:
    return Row(workload, system.name, config, "rate", "jobs/s", values)


# -- 1, 2: enqueue ----------------------------------------------------------------------


def enqueue_single(system: System, scale: Scale) -> list[Row]:
    n = scale.enqueue_single
    rates = []
    with system.session("enqueue-single"):
        for rep in _reps(scale):
            system.reset()
            rates.append(n / system.enqueue_single(n))
            log(f"  enqueue-single {system.name} #{rep}: {rates[-1]:,.0f} jobs/s")
    row = _rate_row("enqueue-single", system, system.enqueue_single_label, rates)
    row.note = f"{n:,} jobs, one call and one commit each"
    return [row]


def enqueue_bulk(system: System, scale: Scale) -> list[Row]:
    n = scale.enqueue_bulk
    rates = []
    with system.session("enqueue-bulk"):
        for rep in _reps(scale):
            system.reset()
            rates.append(n / system.enqueue_bulk(n))
            log(f"  enqueue-bulk {system.name} #{rep}: {rates[-1]:,.0f} jobs/s")
    row = _rate_row("enqueue-bulk", system, system.enqueue_bulk_label, rates)
    row.note = f"{n:,} jobs in one call"
    return [row]


# -- 3, 7: drains ---------------------------------------------------------------------


def _drain_rows(
    workload: str,
    system: System,
    config: str,
    runs: list[DrainRun],
    note: str = "",
) -> list[Row]:
    capped = [r for r in runs if r.capped]
    if capped:
        done = ", ".join(f"{r.span.count:,}" for r in capped)
        note = (note + "; " if note else "") + f"stopped at the time cap after {done} jobs"
    rate = _rate_row(workload, system, config, [r.rate for r in runs])
    rate.note = note
    startup = Row(
        workload,
        system.name,
        config,
        "start-up",
        "s",
        [r.startup_s for r in runs],
        note="worker spawn to first completion",
        higher_is_better=False,
    )
    return [rate, startup]


def drain(system: System, scale: Scale) -> list[Row]:
    return _drain("drain", system, scale, system.drain_configs[0], system.drain_variants)


def drain_asyncio(system: System, scale: Scale) -> list[Row]:
    """pgqueue's asyncio pool draining no-op ``async def`` tasks; the table shows it next to
    the drain of every system (PGQueuer's tasks are coroutines too)."""
    assert isinstance(system, Pgqueue)
    variants = (ASYNC_RESULTS, ASYNC_IGNORE_RESULT)
    return _drain("drain-asyncio", system, scale, system.asyncio_configs[0], variants)


def _drain(
    workload: str, system: System, scale: Scale, config: WorkerConfig, variants: tuple[str, ...]
) -> list[Row]:
    n = scale.drain
    rows = []
    with system.session(workload):
        for variant in variants:
            runs = []
            for rep in _reps(scale):
                runs.append(system.drain(n, config, variant, scale.drain_cap_s))
                log(
                    f"  {workload} {system.name} {variant} #{rep}: {runs[-1].rate:,.0f} jobs/s"
                    f" ({runs[-1].span.count:,} jobs, start-up {runs[-1].startup_s:.2f} s)"
                )
            label = f"{config.described}; {system.variant_labels[variant]}"
            rows += _drain_rows(workload, system, label, runs, f"{n:,} jobs queued")
    return rows


def drain_sweep(system: System, scale: Scale) -> list[Row]:
    """Every candidate worker configuration once: how the drain's configuration was chosen."""
    rows = []
    runs = [(c, v) for c in system.drain_configs for v in system.drain_variants]
    if isinstance(system, Pgqueue):  # and the asyncio pool's, on async def tasks
        runs += [(c, v) for c in system.asyncio_configs for v in (ASYNC_RESULTS,)]
    with system.session("drain-sweep"):
        for config, variant in runs:
            run = system.drain(scale.drain, config, variant, scale.drain_cap_s)
            log(f"  sweep {system.name} {config.described} {variant}: {run.rate:,.0f} jobs/s")
            label = f"{config.described}; {system.variant_labels[variant]}"
            rows += _drain_rows("drain-sweep", system, label, [run])[:1]
    return rows


def cpu(system: System, scale: Scale) -> list[Row]:
    n = scale.cpu_jobs
    rows = []
    medians = {}
    with system.session("cpu"):
        for concurrency in (1, 2):
            config = system.cpu_config(concurrency)
            runs = []
            # 2,000 jobs of 10 ms take 20 s on one core at best: a cap of its own.
            cap = max(scale.drain_cap_s, 3 * n * scale.cpu_ms / 1000)
            for rep in _reps(scale):
                runs.append(system.drain(n, config, CPU, cap, scale.cpu_ms))
                log(f"  cpu {system.name} -c {concurrency} #{rep}: {runs[-1].rate:,.1f} jobs/s")
            note = f"{n:,} jobs of {scale.cpu_ms:g} ms CPU"
            new = _drain_rows("cpu", system, config.label, runs, note)[:1]
            medians[concurrency] = new[0].median or float("nan")
            if concurrency == 2:
                new[0].note += f"; x{medians[2] / medians[1]:.2f} the rate of -c 1"
            rows += new
    return rows


# -- 4: latency ---------------------------------------------------------------------------


def latency(system: System, scale: Scale) -> list[Row]:
    # One worker process: an idle one is what is woken.
    config = system.drain_configs[0].times(1)
    per_rep: dict[str, list[float]] = {"p50": [], "p99": [], "max": []}
    with system.session("latency"):
        for rep in _reps(scale):
            ms = system.latency(config, scale.latency_interval_s, scale.latency_duration_s)
            per_rep["p50"].append(percentile(ms, 50))
            per_rep["p99"].append(percentile(ms, 99))
            per_rep["max"].append(max(ms))
            log(
                f"  latency {system.name} #{rep}: p50 {per_rep['p50'][-1]:.2f} ms,"
                f" p99 {per_rep['p99'][-1]:.2f} ms, max {per_rep['max'][-1]:.2f} ms"
            )
    jobs = round(scale.latency_duration_s / scale.latency_interval_s)
    note = f"{jobs} jobs, one per {scale.latency_interval_s * 1000:g} ms, commit to task start"
    return [
        Row("latency", system.name, config.label, metric, "ms", values,
            note=note if metric == "p50" else "", higher_is_better=False)
        for metric, values in per_rep.items()
    ]  # fmt: skip


# -- 5: backlog (pgqueue) -------------------------------------------------------------------


def backlog(system: System, scale: Scale) -> list[Row]:
    assert isinstance(system, Pgqueue)
    # One worker process: 10,000 jobs are too few to time two.
    config = system.drain_configs[0].times(1)
    ready = scale.backlog_ready
    rows = []

    def measure(label: str) -> None:
        runs = []
        for rep in _reps(scale):
            system.clear_finished()
            runs.append(system.drain(ready, config, RESULTS, scale.drain_cap_s, fresh=False))
            log(f"  backlog {label} #{rep}: {runs[-1].rate:,.0f} jobs/s")
        note = f"{ready:,} ready jobs drained past them"
        rows.extend(_drain_rows("backlog", system, f"{label}; {config.label}", runs, note)[:1])

    with system.session("backlog"):
        queued = 0
        for size in scale.backlogs:
            log(f"  backlog: inserting {size - queued:,} jobs")
            system.insert_backlog(queued, size - queued)
            queued = size
            measure(f"{size:,} waiting")
        # Claims read jobs_claim_idx in (priority, run_at) order: future jobs of a higher
        # priority than the ready ones lie across that path.
        urgent = scale.backlogs[-1] // 10
        log(f"  backlog: inserting {urgent:,} future jobs at priority 5")
        system.insert_urgent_future(urgent, 5)
        measure(f"{queued:,} + {urgent:,} future at priority 5 waiting")
    return rows


# -- table size after millions of jobs (pgqueue) --------------------------------------------


def table_size(system: System, scale: Scale) -> list[Row]:
    """Run millions of jobs through one worker and read the size of the jobs table and its
    indexes after each round: the hot table must stay bounded by the backlog it holds, not
    grow with the jobs that ran. The producer keeps the backlog between one and two
    batches, as a steady producer would; sizes are read once the round is done and the
    table has been vacuumed since (by the workers' housekeeping where autovacuum is off)."""
    assert isinstance(system, Pgqueue)
    config = system.drain_configs[0].times(1)
    per_round, batch = scale.table_size_jobs, min(50_000, scale.table_size_jobs)
    rows: list[Row] = []
    with system.session("table-size"):
        system.reset()
        worker = system.start_worker(config, IGNORE_RESULT)
        with running(worker):
            done = 0
            for _ in range(scale.table_size_rounds):
                peak = 0
                for _batch in range(per_round // batch):
                    if not wait_until(lambda: system.live_jobs() <= batch, timeout=120):
                        raise RuntimeError("pgqueue: the backlog does not go down")
                    system.enqueue_for_drain(batch, IGNORE_RESULT, 0)
                    peak = max(peak, system.live_jobs())
                done += per_round

                def drained(target: int = done) -> bool:
                    worker.check_alive()
                    return system.completed(IGNORE_RESULT) >= target

                if not wait_until(drained, timeout=per_round / 1_000 + 60):
                    raise RuntimeError(f"pgqueue: {done:,} jobs not done in time")
                vacuums = system.vacuum_count()
                if not wait_until(lambda v=vacuums: system.vacuum_count() > v, timeout=150):
                    raise RuntimeError("pgqueue: the jobs table was not vacuumed")
                sizes = system.jobs_table_sizes()
                log(f"  table-size after {done:,} jobs: peak {peak:,} live; {sizes}")
                label = f"after {done:,} jobs ({peak:,} live at the peak); {config.label}"
                for relation, mb in sizes.items():
                    rows.append(
                        Row("table-size", system.name, label, relation, "MB", [mb],
                            higher_is_better=False)
                    )  # fmt: skip
    return rows


# -- 6: the Postgres ceiling -----------------------------------------------------------------


def postgres_limit(system: limit.PostgresServer, scale: Scale) -> list[Row]:
    rows = []
    with system.session("limit"):
        for script in (limit.INSERT, limit.INSERT_QUIET, limit.CLAIM_1, limit.CLAIM_100):
            for clients in limit.CLIENTS:
                rates = []
                for rep in _reps(scale):
                    rates.append(limit.run_pgbench(system.dsn, script, clients, scale))
                    log(f"  limit {script.name} -c {clients} #{rep}: {rates[-1]:,.0f} rows/s")
                rows.append(
                    Row("limit", POSTGRES, f"pgbench -c {clients}: {script.name}", "rate",
                        "rows/s", rates, note=f"pgbench/{script.file.name}")
                )  # fmt: skip
    return rows


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("enqueue-single", enqueue_single),
        Workload("enqueue-bulk", enqueue_bulk),
        Workload("drain", drain),
        Workload("drain-asyncio", drain_asyncio, only=("pgqueue",)),
        Workload("latency", latency),
        Workload("backlog", backlog, only=("pgqueue",)),
        Workload("table-size", table_size, only=("pgqueue",)),
        Workload("limit", postgres_limit, only=(POSTGRES,)),
        Workload("cpu", cpu),
        Workload("drain-sweep", drain_sweep),
    )
}
# What runs without --only; the sweep is run on demand.
DEFAULT_WORKLOADS = [name for name in WORKLOADS if name != "drain-sweep"]


def run_workload(workload: Workload, system: Any, scale: Scale) -> list[Row]:
    """Run one workload on one system; a failure becomes a row saying so, not a crash."""
    try:
        return workload.run(system, scale)
    except Skip as skip:
        return [Row(workload.name, system.name, "", "", "", skipped=str(skip))]
    except Exception as exc:  # a broken peer must not lose the other systems' figures
        log(f"  {workload.name} {system.name} failed: {exc!r}")
        first_line = (str(exc).strip().splitlines() or [repr(exc)])[0]
        return [
            Row(workload.name, system.name, "", "", "",
                skipped=f"error: {type(exc).__name__}: {first_line}")
        ]  # fmt: skip


__all__ = ["DEFAULT_WORKLOADS", "POSTGRES", "WORKLOADS", "run_workload"]
