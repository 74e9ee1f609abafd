"""``python -m benchmarks.hosts``: a drain by 1, 2, 4 and 8 worker hosts, and what Postgres
spends on it.

Each host is a network namespace with its own hostname and a link to the root namespace
(benchmarks/netns.py), running one ``pgqueue worker`` process. Per drain: the benchmark's
database emptied (jobs, results, workers), the workers started and registered (idle), then
``--jobs`` no-op jobs queued in one ``enqueue_many`` (one commit), and the time from the
first completion to the last. Meanwhile benchmarks/pgside.py samples the CPU of this
database's backends, of the workers and of the forwarders, what active backends wait on,
ungranted locks, and the WAL written.

Needs root, ``ip``, ``unshare`` and ``socat``; the plot needs matplotlib (the ``bench``
extra). Examples, from the repository root:

- ``python -m benchmarks.hosts --hosts 1,2 --jobs 5000``: a small run, under a minute
- ``python -m benchmarks.hosts --reps 3 --md benchmarks/hosts.md --png benchmarks/hosts.png``:
  1, 2, 4 and 8 hosts, 100,000 jobs each, three repetitions (the figure for RESULTS.md)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .common import (
    PYTHON,
    SERVER_DSN,
    WorkerProcess,
    bench_env,
    fetchone,
    server_reachable,
    wait_until,
)
from .netns import Hosts, HostsUnavailable, unavailable
from .pgside import WAITS, Sampler, Window
from .systems import IGNORE_RESULT, RESULTS
from .systems.pgqueue import ASYNC_IGNORE_RESULT, ASYNC_RESULTS, Pgqueue
from .workloads import log


@dataclass
class Run:
    hosts: int
    jobs: int
    rate: float
    window: Window
    direct: bool = False

    @property
    def label(self) -> str:
        return f"{self.hosts}, no namespace" if self.direct else str(self.hosts)


class Place(Protocol):
    """Where a worker runs: a namespaced ``Host``, or ``Local``."""

    hostname: str

    def command(self, argv: Sequence[str]) -> list[str]: ...
    def reach(self, dsn: str) -> str: ...
    def forwarder_pids(self) -> list[int]: ...


class Local:
    """The root namespace itself, straight to the server: the baseline without a link and
    a forwarder in the way."""

    hostname = "local"

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def reach(self, dsn: str) -> str:
        return dsn

    def forwarder_pids(self) -> list[int]:
        return []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hosts", description=__doc__)
    parser.add_argument("--hosts", default="1,2,4,8", help="host counts (default: 1,2,4,8)")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per drain")
    parser.add_argument("--reps", type=int, default=1, help="drains per host count")
    parser.add_argument("-P", "--pool", default="threads", choices=("threads", "asyncio"))
    parser.add_argument("-c", "--concurrency", type=positive, default=64, help="per worker")
    parser.add_argument("--prefetch-multiplier", type=positive, default=1)
    parser.add_argument("--ignore-result", action="store_true", help="no-op tasks, no results")
    parser.add_argument(
        "--direct",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drain with one worker outside any namespace, straight to the server",
    )
    parser.add_argument("--cap", type=float, default=300, help="longest a drain may take, s")
    parser.add_argument("--md", type=Path, help="also write the table here")
    parser.add_argument("--png", type=Path, help="plot here (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        args.counts = sorted({int(c) for c in args.hosts.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--hosts takes counts separated by commas, such as 1,2,4,8: {args.hosts!r}")
    if not args.counts or min(args.counts) < 1 or args.jobs < 1 or args.reps < 1:
        parser.error("--hosts, --jobs and --reps must be at least 1")
    return args


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def worker_argv(args: argparse.Namespace, dsn: str) -> list[str]:
    return [
        PYTHON, "-m", "pgqueue.cli", "--dsn", dsn, "worker",
        "-A", "benchmarks.pgqueue_app:app", "-P", args.pool, "-c", str(args.concurrency),
        "--prefetch-multiplier", str(args.prefetch_multiplier), "--loglevel", "WARNING",
    ]  # fmt: skip


def drain_variant(args: argparse.Namespace) -> str:
    """No-op tasks: ``async def`` ones for the asyncio pool, plain ones for threads."""
    if args.pool == "asyncio":
        return ASYNC_IGNORE_RESULT if args.ignore_result else ASYNC_RESULTS
    return IGNORE_RESULT if args.ignore_result else RESULTS


def drain(args: argparse.Namespace, system: Pgqueue, hosts: Sequence[Place]) -> Run:
    """One drain by ``hosts``, on the system's database, emptied first."""
    system.reset()
    workers = [
        WorkerProcess(
            host.command(worker_argv(args, host.reach(system.dsn))),
            env=bench_env(),
            label=host.hostname,
        )
        for host in hosts
    ]
    sampler = Sampler(
        system.dsn,
        {
            "workers": lambda: [w.pid for w in workers if w.alive()],
            "forwarders": lambda: [p for h in hosts for p in h.forwarder_pids()],
        },
    )
    try:

        def registered() -> bool:
            for w in workers:
                w.check_alive()
            registered = fetchone(system.dsn, "SELECT count(*) FROM pgqueue.workers")[0]
            return int(registered) == len(hosts)

        if not wait_until(registered, timeout=120):
            raise RuntimeError(f"{len(hosts)} workers did not register in 120 s")
        sampler.start()
        variant = drain_variant(args)
        system.enqueue_for_drain(args.jobs, variant, 0)

        def done() -> bool:
            for w in workers:
                w.check_alive()
            return system.completed(variant) >= int(args.jobs)

        if not wait_until(done, timeout=args.cap, interval=0.2):
            log(f"  stopped at the cap after {system.completed(variant):,} jobs")
        span = system.completion_span(variant)
    finally:
        for w in workers:
            w.stop()
        if sampler.is_alive():
            sampler.stop()
    window = sampler.window(span.first, span.last)
    direct = any(isinstance(h, Local) for h in hosts)
    return Run(len(hosts), span.count, span.rate, window, direct)


def table(runs: list[Run], args: argparse.Namespace) -> str:
    """The median run of each host count as a markdown table."""
    cores = os.cpu_count() or 1
    lines = [
        "| hosts | jobs/s | per host | Postgres backends, cores | Postgres CPU per job"
        " | workers, cores "
        "| forwarders, cores | machine busy | active backends | waiting: "
        + ", ".join(WAITS)
        + " | most waited on | ungranted locks | WAL per job |",
        "|" + "---|" * 13,
    ]
    for run in medians(runs):
        w = run.window
        cores_of = {k: v / w.seconds for k, v in w.cpu_s.items()}
        waits = " / ".join(f"{w.waiting.get(k, 0):.2f}" for k in WAITS)
        lines.append(
            f"| {run.label} | {run.rate:,.0f} | {run.rate / run.hosts:,.0f}"
            f" | {cores_of.get('postgres', 0):.2f}"
            f" | {w.cpu_s.get('postgres', 0) / max(run.jobs, 1) * 1e6:,.0f} µs"
            f" | {cores_of.get('workers', 0):.2f}"
            f" | {cores_of.get('forwarders', 0):.2f} | {w.machine_busy:.0%} of {cores}"
            f" | {w.active:.1f} | {waits} | {w.top_wait()} | {w.ungranted:.2f}"
            f" | {w.wal_bytes / max(run.jobs, 1):,.0f} B |"
        )
    variant = Pgqueue.variant_labels[drain_variant(args)]
    lines.append("")
    lines.append(
        f"{args.jobs:,} no-op jobs ({variant}) per drain; each host one worker"
        f" `-P {args.pool} -c {args.concurrency} --prefetch-multiplier"
        f" {args.prefetch_multiplier}`; the median of {args.reps} drain(s) per row;"
        " rates over the drain (first completion to last); CPU, waits and WAL over the"
        " samples (every 0.1 s) enclosing it, so a small drain overstates them."
        ' "no namespace": one worker'
        " in the root namespace connecting straight to the server, the cost of the link and"
        " forwarder by comparison. Waiting: active backends"
        " waiting on each kind, on average per sample. WAL and machine busy are the whole"
        " server's and machine's."
    )
    return "\n".join(lines)


def medians(runs: list[Run]) -> list[Run]:
    picked = []
    for key in sorted({(r.hosts, not r.direct) for r in runs}):
        of = sorted((r for r in runs if (r.hosts, not r.direct) == key), key=lambda r: r.rate)
        picked.append(of[(len(of) - 1) // 2])
    return picked


def plot(runs: list[Run], path: Path) -> None:
    """Throughput, and where the CPU goes, by host count."""
    try:
        # Optional: matplotlib comes with the bench dependency group.
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no plot: matplotlib is not installed (pip install -e . --group bench)")
        return
    picked = [r for r in medians(runs) if not r.direct]
    counts = [r.hosts for r in picked]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(counts, [r.rate for r in picked], "o-", label="all hosts")
    left.plot(counts, [r.rate / r.hosts for r in picked], "s--", label="per host")
    for r in medians(runs):
        if r.direct:
            left.plot([r.hosts], [r.rate], "k*", markersize=10, label="1 worker, no namespace")
    left.set(xlabel="worker hosts", ylabel="jobs/s", title="Drain throughput", xticks=counts)
    left.set_ylim(bottom=0)
    left.legend()
    for group in ("postgres", "workers", "forwarders"):
        used = [r.window.cpu_s.get(group, 0) / r.window.seconds for r in picked]
        right.plot(counts, used, "o-", label=f"{group}")
    busy = [r.window.machine_busy * (os.cpu_count() or 1) for r in picked]
    right.plot(counts, busy, "k:", label="whole machine")
    right.axhline(os.cpu_count() or 1, color="grey", linewidth=0.8)
    right.set(xlabel="worker hosts", ylabel="CPU cores busy", title="Where the CPU goes")
    right.set_xticks(counts)
    right.set_ylim(bottom=0)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = server_reachable() or unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    runs: list[Run] = []
    try:
        with Hosts(max(args.counts), SERVER_DSN) as hosts:
            system = Pgqueue()
            with system.session("hosts"):
                places: list[Sequence[Place]] = [[Local()]] if args.direct else []
                places += [hosts.hosts[:count] for count in args.counts]
                for group in places:
                    for rep in range(1, args.reps + 1):
                        started = time.monotonic()
                        run = drain(args, system, group)
                        runs.append(run)
                        log(
                            f"  {run.label} host(s) #{rep}: {run.rate:,.0f} jobs/s, Postgres"
                            f" backends {run.window.cpu_s.get('postgres', 0):.1f} CPU s"
                            f" ({time.monotonic() - started:.0f} s)"
                        )
    except HostsUnavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    text = table(runs, args)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    if args.png:
        plot(runs, args.png)
    print(f"median rates: {[round(r.rate) for r in medians(runs)]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
