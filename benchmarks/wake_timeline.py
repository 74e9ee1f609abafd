"""Where an idle worker's wake-up latency goes: a timeline of each step, one job at a time.

    python -m benchmarks.wake_timeline --pool threads -c 512 --prefetch-multiplier 1

A sampling profiler cannot resolve a path of two milliseconds that runs fifty times a
second, so this notes the time at each step instead. It runs a pgqueue worker in this
process, with a timestamp taken wherever the wake path crosses a step (the functions are
wrapped here, the worker is unchanged), while a producer process sends one job every 20 ms
and notes when each commit returned. Per job:

- *commit to wake-up*: the producer's commit returned; the worker's select() returned with
  the NOTIFY (negative when the notification arrived before the producer saw its commit);
- *wake-up to job decoded*: reading the notification and decoding the job it carries (a job
  handed to the idle worker by the producer's insert), or, for a job that was not, the
  loop's bookkeeping and the claim's round trip (server, network, commit);
- *hand-off*: from the decoded job to the task body starting (the pool's submit, a thread's
  wake-up, the task's setup);
- *total*: commit to task start, what the latency workload measures.

The heading says how many jobs were handed over and how many claimed.

Prints the percentiles and writes them to ``benchmarks/profiles/latency-timeline-*.txt``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .common import BENCH_DIR, PYTHON, bench_env, fresh_database, percentile

OUT = BENCH_DIR / "profiles"
TASK = "bench.timeline"
STEPS = ("commit to wake-up", "wake-up to job decoded", "hand-off", "total")


def produce(dsn: str, jobs: int, interval: float) -> None:
    """The producer process: one job every ``interval`` s; prints each commit's time."""
    from pgqueue import PgQueue

    app = PgQueue("timeline", dsn=dsn)
    task = app.task(name=TASK)(lambda i: None)
    app.connection()
    time.sleep(1.0)  # let the worker fall idle
    committed = {}
    start = time.time()
    for i in range(jobs):
        while time.time() < start + i * interval:
            time.sleep(0.0005)
        task.delay(i)
        committed[i] = time.time()
    print(json.dumps(committed))


def _wrap(owner: Any, name: str, event: Callable[[str], None], before: str, after: str) -> None:
    original = getattr(owner, name)  # for a classmethod, bound to its class

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            event(before)
        result = original(*args, **kwargs)
        if after:
            event(after)
        return result

    setattr(owner, name, staticmethod(wrapped) if isinstance(owner, type) and
            isinstance(owner.__dict__.get(name), classmethod) else wrapped)  # fmt: skip


def measure(pool: str, concurrency: int, prefetch: int, jobs: int, interval: float) -> str:
    import pgqueue.pools
    import pgqueue.worker
    from pgqueue import PgQueue

    events: list[tuple[str, float]] = []

    def event(name: str) -> None:
        events.append((name, time.time()))

    starts: dict[int, float] = {}
    with fresh_database("timeline", "wake") as dsn:
        app = PgQueue("timeline", dsn=dsn)
        worker = pgqueue.worker.Worker(
            app, pool=pool, concurrency=concurrency, prefetch_multiplier=prefetch
        )

        def body(i: int) -> None:
            starts[i] = time.time()
            if i == jobs - 1:
                worker.stop()

        app.task(name=TASK)(body)
        app.migrate()
        _wrap(pgqueue.worker, "wait_for_fds", event, "", "wake")
        _wrap(pgqueue.worker.Worker, "_sync", event, "sync", "")
        _wrap(pgqueue.worker.Job, "from_claim", event, "decoded", "")
        _wrap(pgqueue.pools, "execute", event, "execute", "")
        argv = [PYTHON, "-m", "benchmarks.wake_timeline", "--produce", dsn, str(jobs)]
        producer = subprocess.Popen(
            [*argv, str(interval)], stdout=subprocess.PIPE, env=bench_env(), text=True
        )
        worker.run(install_signals=False)
        out, _ = producer.communicate(timeout=60)
        committed = {int(k): v for k, v in json.loads(out).items()}

    per_step: dict[str, list[float]] = {step: [] for step in STEPS}
    claimed = 0
    for i, commit in committed.items():
        if i < 10 or i not in starts:  # the first jobs warm the worker up
            continue
        start = starts[i]

        def first(name: str, after: float, before: float = start) -> float:
            return next((t for n, t in events if n == name and after <= t <= before), before)

        wake = first("wake", commit - 0.01)
        decoded = first("decoded", wake)
        claimed += first("sync", wake, decoded) < decoded
        for step, value in zip(
            STEPS, (wake - commit, decoded - wake, start - decoded, start - commit), strict=True
        ):
            per_step[step].append(value * 1000)
    label = f"-P {pool} -c {concurrency}"
    if prefetch:
        label += f" --prefetch-multiplier {prefetch}"
    lines = [
        f"Wake-up timeline, pgqueue worker {label}: {len(per_step['total'])} jobs, one every"
        f" {interval * 1000:g} ms, {len(per_step['total']) - claimed} handed over and"
        f" {claimed} claimed (ms)",
        f"{'step':24} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}",
    ]
    for step, values in per_step.items():
        cells = [percentile(values, q) for q in (50, 90, 99)] + [max(values)]
        lines.append(f"{step:24} " + " ".join(f"{v:7.3f}" for v in cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default="threads")
    parser.add_argument("-c", "--concurrency", type=int, default=512)
    parser.add_argument("--prefetch-multiplier", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between jobs")
    parser.add_argument("--produce", nargs=3, metavar=("DSN", "JOBS", "INTERVAL"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.produce:
        produce(args.produce[0], int(args.produce[1]), float(args.produce[2]))
        return
    report = measure(
        args.pool, args.concurrency, args.prefetch_multiplier, args.jobs, args.interval
    )
    print(report)
    OUT.mkdir(exist_ok=True)
    name = f"latency-timeline-{args.pool}-c{args.concurrency}.txt"
    (OUT / name).write_text(report + "\n")
    print(f"written to {OUT / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
