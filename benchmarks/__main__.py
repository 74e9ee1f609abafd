"""``python -m benchmarks``: every workload, for pgqueue and each peer, one after another.

Examples (from the repository root):

- ``python -m benchmarks --quick``: about 20x smaller, a few minutes
- ``python -m benchmarks --only drain,latency --systems pgqueue,celery``
- ``python -m benchmarks --only drain,drain-asyncio --systems pgqueue,pgqueuer``: the
  asyncio pool on async def tasks beside the thread pool and PGQueuer
- ``python -m benchmarks --json results.json``: the figures, with every repetition
- ``python -m benchmarks --only drain-sweep --quick``: how each drain config was chosen
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import FULL, QUICK, ROOT, SERVER_DSN, Row, fetchone, server_reachable
from .limit import PostgresServer
from .systems import all_systems
from .workloads import DEFAULT_WORKLOADS, POSTGRES, WORKLOADS, Workload, log, run_workload


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark pgqueue against Celery, Procrastinate and PGQueuer.",
    )
    parser.add_argument("--quick", action="store_true", help="scale every count down about 20x")
    parser.add_argument(
        "--only",
        metavar="WORKLOAD[,..]",
        help=f"workloads to run (default: all but drain-sweep): {', '.join(WORKLOADS)}",
    )
    names = [s.name for s in all_systems()] + [POSTGRES]
    parser.add_argument(
        "--systems",
        metavar="SYSTEM[,..]",
        help=f"systems to run (default: all): {', '.join(names)}",
    )
    parser.add_argument("--reps", type=int, help="repetitions per figure (default: 3)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    args.workloads = _pick(args.only, list(WORKLOADS), DEFAULT_WORKLOADS, parser, "workload")
    args.system_names = _pick(args.systems, names, names, parser, "system")
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def _pick(
    given: str | None,
    known: list[str],
    default: list[str],
    parser: argparse.ArgumentParser,
    what: str,
) -> list[str]:
    if not given:
        return default
    picked = [g.strip() for g in given.split(",") if g.strip()]
    unknown = [p for p in picked if p not in known]
    if unknown:
        parser.error(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return picked


def applies(workload: Workload, subject: str) -> bool:
    if workload.only is not None:
        return subject in workload.only
    return subject != POSTGRES


# -- the table -------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> str:
    """A Markdown table, aligned so that it also reads well in a terminal."""
    header = ["workload", "system", "configuration", "metric", "median", "min", "max", "unit",
              "note"]  # fmt: skip
    lines = [header]
    for row in rows:
        if row.skipped:
            lines.append([row.workload, row.system, "", "", "", "", "", "",
                          f"skipped: {row.skipped}"])  # fmt: skip
            continue
        lines.append([
            row.workload, row.system, row.config, row.metric, _number(row.median),
            _number(min(row.values)) if row.values else "-",
            _number(max(row.values)) if row.values else "-",
            row.unit, row.note,
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {4, 5, 6}

    def fmt(line: list[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        return "| " + " | ".join(cells) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


# -- where it ran ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    server = fetchone(SERVER_DSN, "SELECT version()")[0].split(" on ")[0]
    settings = dict(
        fetchone(
            SERVER_DSN,
            """SELECT array_agg(ARRAY[name, current_setting(name)])
                 FROM pg_settings
                WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync',
                               'autovacuum', 'work_mem', 'max_connections')""",
        )[0]
    )
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": server,
        "postgres_settings": settings,
        "load_average_at_start": os.getloadavg(),
        "pgqueue_commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = (QUICK if args.quick else FULL).scaled(args.reps)
    reason = server_reachable()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    started = time.monotonic()
    info = machine()
    log(
        f"{info['cpu']}, {info['cores']} cores; {info['postgres']}; "
        f"load {info['load_average_at_start'][0]:.2f}"
    )
    subjects: list[Any] = [s for s in all_systems() if s.name in args.system_names]
    if POSTGRES in args.system_names:
        subjects.append(PostgresServer())
    rows: list[Row] = []
    for subject in subjects:
        unavailable = subject.unavailable()
        for name in args.workloads:
            workload = WORKLOADS[name]
            if not applies(workload, subject.name):
                continue
            if unavailable:
                rows.append(Row(name, subject.name, "", "", "", skipped=unavailable))
                log(f"{name} / {subject.name}: skipped: {unavailable}")
                continue
            log(f"{name} / {subject.name}")
            rows += run_workload(workload, subject, scale)
    order = {name: i for i, name in enumerate(WORKLOADS)}
    rows.sort(key=lambda r: order[r.workload])  # stable: systems stay in run order
    elapsed = time.monotonic() - started
    print(table(rows))
    print(f"\n{'quick' if args.quick else 'full'} run, {scale.reps} repetitions, "
          f"{elapsed / 60:.1f} min ({elapsed:.0f} s); load average at the end "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": " ".join(["python -m benchmarks", *(argv or sys.argv[1:])]),
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "quick": args.quick,
                    "scale": scale.__dict__,
                    "machine": info,
                    "elapsed_s": round(elapsed, 1),
                    "rows": [r.as_json() for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
