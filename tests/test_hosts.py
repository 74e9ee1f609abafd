"""Workers on several "hosts": each in a network namespace of its own, with a hostname of its
own, reaching Postgres across a veth link (benchmarks/netns.py). Skipped, with the reason,
where namespaces cannot be made (not root, no ip/unshare/socat)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from benchmarks import netns
from tests import taskapp
from tests.conftest import WorkerProcess, wait_for

HOSTS = 3


class HostWorker(WorkerProcess):
    """A real worker process run inside ``host``, connecting through the host's link."""

    def __init__(self, host: netns.Host, args: list[str], db: psycopg.Connection[Any]) -> None:
        self.host = host
        super().__init__(host.dsn, args, db)

    def command(self, argv: list[str]) -> list[str]:
        return self.host.command(argv)


@pytest.fixture
def hosts(dsn: str) -> Iterator[netns.Hosts]:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"namespaced hosts: {reason}")
    try:
        made = netns.Hosts(HOSTS, dsn)
    except netns.HostsUnavailable as exc:
        pytest.skip(f"namespaced hosts: {exc}")
    with made:
        yield made


@pytest.fixture
def host_worker(
    hosts: netns.Hosts, db: psycopg.Connection[Any]
) -> Iterator[Callable[..., HostWorker]]:
    """Start a worker on a host: ``host_worker(hosts[0], "-c", "2")``; killed at the end."""
    started: list[HostWorker] = []

    def start(host: netns.Host, *args: str) -> HostWorker:
        w = HostWorker(host, list(args), db)
        started.append(w)
        w.wait_ready()
        return w

    yield start
    for w in started:
        w.close()


def runs(db: psycopg.Connection[Any], pattern: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT tag, count(*) FROM test_runs WHERE tag LIKE %s GROUP BY tag", (pattern,)
    ).fetchall()
    return {tag: int(n) for tag, n in rows}


def worker_name(w: HostWorker) -> str:
    return f"pgqueue@{w.host.hostname}:{w.pid}"


def result_workers(db: psycopg.Connection[Any]) -> set[str]:
    return {name for (name,) in db.execute("SELECT DISTINCT worker FROM pgqueue.results")}


def same_network_namespace(pid: int, namespace: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{namespace}").st_ino


def test_workers_on_three_hosts_drain_every_job_exactly_once(app, db, hosts, host_worker):
    workers = [host_worker(h, "-P", "threads", "-c", "2") for h in hosts]
    for w, h in zip(workers, hosts, strict=True):
        assert same_network_namespace(w.pid, h.namespace)
    assert os.stat("/proc/self/ns/net").st_ino not in {
        os.stat(f"/proc/{w.pid}/ns/net").st_ino for w in workers
    }
    registered = db.execute("SELECT pid, hostname FROM pgqueue.workers").fetchall()
    assert sorted(registered) == sorted((w.pid, w.host.hostname) for w in workers)

    results = [taskapp.slow_record.delay(f"job-{i}", 0.05) for i in range(90)]
    ran_on = [r.get(timeout=60)["pid"] for r in results]

    assert runs(db, "job-%") == {f"job-{i}": 1 for i in range(90)}
    assert set(ran_on) == {w.pid for w in workers}  # every host took part
    assert result_workers(db) == {worker_name(w) for w in workers}


def test_a_host_cut_off_the_network_has_its_jobs_finished_by_the_others(
    app, db, hosts, host_worker, monkeypatch
):
    lost_timeout = 6.0  # heartbeats every 0.5 s: a busy machine never delays one this long
    monkeypatch.setenv(
        "PGQUEUE_TEST_CONF",
        json.dumps(
            {
                "worker_heartbeat_interval": 0.5,
                "worker_lost_timeout": lost_timeout,
                "worker_rescue_interval": 0.2,
                "worker_reconnect_grace": 1.0,
            }
        ),
    )
    a = host_worker(hosts[0], "-P", "threads", "-c", "2")
    stranded = [taskapp.hold.delay(f"stranded-{i}", "release") for i in range(2)]
    wait_for(lambda: len(runs(db, "stranded-%")) == 2, what="both jobs to start on host 1")
    others = [host_worker(h, "-P", "threads", "-c", "2") for h in hosts[1:]]
    other_names = {worker_name(w) for w in others}

    hosts[0].cut()
    cut_at = time.monotonic()
    later = [taskapp.slow_record.delay(f"later-{i}", 0.05) for i in range(20)]

    # Postgres still holds host 1's sessions open (the forwarder keeps them), so its
    # advisory lock looks held: it is lost by its heartbeat, worker_lost_timeout after it
    # last beat, and its jobs run again on the other hosts, counted as a retry.
    wait_for(
        lambda: runs(db, "stranded-%") == {"stranded-0": 2, "stranded-1": 2},
        timeout=60,
        what="host 1's jobs to run again elsewhere",
    )
    assert time.monotonic() - cut_at >= lost_timeout - 1  # its last beat came before the cut
    db.execute("INSERT INTO test_runs (tag) VALUES ('release')")
    for r in stranded:
        assert r.get(timeout=60) == "released"
        assert r.retries == 1
    assert {r.get(timeout=60)["pid"] for r in later} <= {w.pid for w in others}
    assert runs(db, "later-%") == {f"later-{i}": 1 for i in range(20)}
    assert result_workers(db) == other_names
    gone = db.execute("SELECT count(*) FROM pgqueue.workers WHERE pid = %s", (a.pid,))
    assert gone.fetchone() == (0,)

    # Back on the network, host 1's late outcomes are fenced off: the results stay the
    # other hosts'.
    hosts[0].restore()
    discarded = "discarded: the job is no longer ours"
    wait_for(lambda: discarded in a.output(), timeout=120, what="host 1's outcomes discarded")
    assert result_workers(db) == other_names
    assert runs(db, "stranded-%") == {"stranded-0": 2, "stranded-1": 2}


def test_namespaces_left_by_a_dead_run_are_swept():
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"namespaced hosts: {reason}")
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale, live = f"pgq-h{gone.pid}-1", f"pgq-h{os.getpid()}-99"
    for name in (stale, live):
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"network namespaces are not permitted here: {made.stderr.strip()}")
    try:
        assert stale in netns.sweep()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale not in names
        assert live in names  # this run is alive: its namespaces are its own to remove
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
