"""Profile a pgqueue worker during a drain with py-spy: where its time goes, per function.

    python -m benchmarks.profile --pool threads -c 4 --jobs 40000

Writes to ``benchmarks/profiles/``: the collapsed stacks py-spy sampled (``*.collapsed``,
the input of flame-graph tools such as speedscope) and a summary (``*.txt``): how the
samples split between the claim loop, the pool and the heartbeat, and the claim loop's
busiest functions, once sampling only the thread that holds the GIL (where the worker's
Python CPU goes) and once sampling every thread, waits included (where its time goes).
With strace installed, the summary also counts the claim loop's system calls.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .common import BENCH_DIR, wait_until
from .systems import CPU, IGNORE_RESULT, RESULTS
from .systems.pgqueue import Pgqueue, _config

OUT = BENCH_DIR / "profiles"


def record(pid: int, seconds: float, path: Path, *, idle: bool, subprocesses: bool) -> None:
    """Sample for ``seconds``: the thread holding the GIL (idle=False), or every thread,
    waiting or not (idle=True; slower to sample, so at a lower rate)."""
    argv = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--format", "raw", "--output", str(path)]
    argv += ["--rate", "100", "--idle"] if idle else ["--rate", "250", "--gil"]
    if subprocesses:
        argv.append("--subprocesses")
    subprocess.run(argv, check=True, capture_output=True)


# Which part of the worker a stack belongs to, by a frame it contains.
ROLES = (
    ("claim loop (main thread)", "Worker._loop"),
    ("pool threads", "ThreadPool._run"),
    ("prefork children", "_child_main"),
    ("heartbeat thread", "_Heartbeat.run"),
)


def _role(frames: list[str]) -> str:
    for role, marker in ROLES:
        if any(marker in frame for frame in frames):
            return role
    return "other"


def summarize(path: Path, top: int = 20) -> str:
    """Samples per part of the worker; for the claim loop, the frames with the most samples,
    as the innermost frame and anywhere on the stack."""
    per_role: Counter[str] = Counter()
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        role = _role(frames)
        per_role[role] += n
        if role != ROLES[0][0]:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    total = sum(per_role.values())
    if not total:
        return "no samples\n"
    lines = [f"{total} samples: " + ", ".join(
        f"{role} {n * 100 / total:.0f}%" for role, n in per_role.most_common()
    )]  # fmt: skip
    loop = per_role[ROLES[0][0]]
    if loop:
        lines += ["", f"claim loop, {loop} samples; innermost frame (self):"]
        lines += [f"  {n * 100 / loop:5.1f}%  {frame}" for frame, n in own.most_common(top)]
        lines += ["", "claim loop; pgqueue and psycopg frames anywhere on the stack (inclusive):"]
        ours = [(f, n) for f, n in anywhere.most_common() if "pgqueue/" in f or "psycopg/" in f]
        lines += [f"  {n * 100 / loop:5.1f}%  {frame}" for frame, n in ours[:top]]
    return "\n".join(lines) + "\n"


def count_syscalls(pid: int, seconds: float) -> str:
    if not shutil.which("strace"):
        return "strace not installed: no system call counts\n"
    done = subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("-P", "--pool", default="threads", choices=["prefork", "threads", "solo"])
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--prefetch-multiplier", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--seconds", type=float, default=6.0, help="per recording")
    parser.add_argument("--ignore-result", action="store_true")
    parser.add_argument(
        "--cpu-ms", type=float, default=0, help="run tasks burning this much CPU, not no-ops"
    )
    parser.add_argument("--name", help="file name stem (default: from the options)")
    args = parser.parse_args(argv)
    if not shutil.which("py-spy"):
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    variant = CPU if args.cpu_ms else IGNORE_RESULT if args.ignore_result else RESULTS
    config = _config(args.pool, args.concurrency, args.prefetch_multiplier)
    prefetch = f"-pf{args.prefetch_multiplier}" if args.prefetch_multiplier else ""
    name = args.name or f"drain-{args.pool}-c{args.concurrency}{prefetch}-{variant}"
    OUT.mkdir(exist_ok=True)
    system = Pgqueue()
    work = f"{args.cpu_ms:g} ms CPU" if args.cpu_ms else "no-op"
    report = [f"pgqueue worker {config.label}, {variant}, drain of {args.jobs:,} {work} jobs", ""]
    with system.session("profile"):
        system.enqueue_for_drain(args.jobs, variant, args.cpu_ms)
        worker = system.start_worker(config, variant)
        try:
            wait_until(lambda: system.completed(variant) > 0, timeout=30)
            for idle, label in ((False, "cpu"), (True, "wall")):
                path = OUT / f"{name}.{label}.collapsed"
                before, started = system.completed(variant), time.monotonic()
                record(worker.pid, args.seconds, path, idle=idle,
                       subprocesses=args.pool == "prefork")  # fmt: skip
                rate = (system.completed(variant) - before) / (time.monotonic() - started)
                what = (
                    "of the thread holding the GIL"
                    if not idle
                    else "of every thread, waits included"
                )
                report += [f"== {label}: samples {what}; {rate:,.0f} jobs/s meanwhile", ""]
                report.append(summarize(path))
            before = system.completed(variant)
            calls = count_syscalls(worker.pid, 3)
            jobs = system.completed(variant) - before
            report += [f"== claim loop's system calls in 3 s ({jobs:,} jobs done meanwhile)", calls]
        finally:
            worker.stop()
    (OUT / f"{name}.txt").write_text("\n".join(report))
    print(f"wrote {OUT / name}.txt and its .collapsed stacks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
