"""Worker "hosts" on one machine: Linux network namespaces, each with a link to the root one.

Each host is a network namespace ``pgq-h<pid>-<i>`` joined to the root namespace by a veth
pair on a /30 of its own (10.214.0.0/16). Postgres listens on 127.0.0.1 only and other
people use the same server, so it is neither restarted nor reconfigured: a ``socat`` in the
root namespace listens on each link's root-side address and forwards every connection to
the server. To Postgres the connections come from 127.0.0.1, as a local client's do; to the
worker, Postgres is across a network link that ``cut()`` takes down (``ip link set down``):
its packets are dropped, and the forwarder keeps the server's side of each connection open,
as a real network partition leaves it.

A worker runs inside with ``host.command(argv)``: ``ip netns exec`` puts it in the
namespace, ``unshare --uts`` gives it a hostname of its own (what ``socket.gethostname()``
and so ``pgqueue.workers.hostname`` say); its pid stays the one ``Popen`` returns.

Needs root, ``ip`` (iproute2), ``unshare`` (util-linux) and ``socat``; ``unavailable()``
says what is missing. Namespaces and links are removed by ``Hosts.close()``, at exit, and,
when left by a run that died, by the next run's ``sweep()``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# 10.213/16 is the chaos suite's (tests/chaos/conftest.py)
NETWORK = ipaddress.IPv4Network("10.214.0.0/16")
NAMESPACE = re.compile(r"^pgq-h(\d+)-(\d+)$")
ROOT_LINK = re.compile(r"^pgq(\d+)h(\d+)$")  # interface names are at most 15 characters


class HostsUnavailable(Exception):
    """Namespaced hosts cannot be made here; the message says why."""


def unavailable() -> str | None:
    """None if hosts can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("socat", "socat")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {package})"
    return None


@dataclass
class Host:
    """One namespace, its link to the root namespace and the forwarder on the root side."""

    index: int
    namespace: str
    hostname: str
    root_link: str
    root_address: str
    address: str
    port: int
    dsn: str
    forwarder: subprocess.Popen[bytes] | None = None

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host, under its own hostname."""
        # sh runs hostname in a child and then execs argv, so the pid Popen sees is argv's
        inner = 'hostname "$0" && exec "$@"'
        return [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "sh", "-c", inner, self.hostname, *argv,
        ]  # fmt: skip

    def reach(self, dsn: str) -> str:
        """``dsn`` (a database on the same server) as this host connects to it."""
        return _dsn_via(dsn, self.root_address, self.port)

    def cut(self) -> None:
        """Take the link down: from now on the host's packets go nowhere."""
        _ip("link", "set", self.root_link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.root_link, "up")

    def forwarder_pids(self) -> list[int]:
        """The forwarder and its children (socat forks one per connection)."""
        if self.forwarder is None:
            return []
        return [self.forwarder.pid, *children_of(self.forwarder.pid)]


class Hosts:
    """``count`` hosts reaching the server of ``dsn``; a context manager that removes them."""

    def __init__(self, count: int, dsn: str, *, port: int = 5432) -> None:
        reason = unavailable()
        if reason:
            raise HostsUnavailable(reason)
        sweep()
        self.hosts: list[Host] = []
        atexit.register(self.close)
        try:
            subnets = free_subnets(count)
            for i, subnet in enumerate(subnets, start=1):
                self.hosts.append(_make_host(i, subnet, dsn, port))
            for host in self.hosts:
                _wait_listening(host.root_address, port)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def close(self) -> None:
        """Stop the forwarders, delete the namespaces and links; safe to call twice."""
        while self.hosts:
            _remove_host(self.hosts.pop())


def _make_host(index: int, subnet: ipaddress.IPv4Network, dsn: str, port: int) -> Host:
    run = os.getpid()
    root_address, address = (str(a) for a in list(subnet.hosts())[:2])
    host = Host(
        index=index,
        namespace=f"pgq-h{run}-{index}",
        hostname=f"pgq-host{index}",
        root_link=f"pgq{run}h{index}",
        root_address=root_address,
        address=address,
        port=port,
        dsn=_dsn_via(dsn, root_address, port),
    )
    try:
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.root_link, "type", "veth", "peer", "name", "veth0",
            "netns", host.namespace)  # fmt: skip
        _ip("addr", "add", f"{root_address}/{subnet.prefixlen}", "dev", host.root_link)
        _ip("link", "set", host.root_link, "up")
        inside = ["-n", host.namespace]
        _ip(*inside, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "veth0")
        _ip(*inside, "link", "set", "veth0", "up")
        _ip(*inside, "link", "set", "lo", "up")
        host.forwarder = _start_forwarder(root_address, port, dsn)
    except BaseException:
        _remove_host(host)
        raise
    return host


def _dsn_via(dsn: str, address: str, port: int) -> str:
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if k != "hostaddr"}
    return make_conninfo("", **{**params, "host": address, "port": str(port)})


def _start_forwarder(address: str, port: int, dsn: str) -> subprocess.Popen[bytes]:
    params = conninfo_to_dict(dsn)
    server_host = str(params.get("host") or "127.0.0.1")
    server_port = str(params.get("port") or 5432)
    if server_host.startswith("/"):
        target = f"UNIX-CONNECT:{server_host}/.s.PGSQL.{server_port}"
    else:
        target = f"TCP:{server_host}:{server_port},nodelay"
    # nodelay: Postgres and libpq both turn Nagle off; a forwarder that left it on would
    # hold back every small message by up to 40 ms.
    listen = f"TCP-LISTEN:{port},bind={address},fork,reuseaddr,backlog=512,nodelay"
    return subprocess.Popen(
        ["socat", listen, target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # one group: close() ends the forks with the listener
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    # A forwarder must not outlive the run that made it (a killed pytest, say).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_listening(address: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                reason = f"forwarder on {address}:{port} never listened: {exc}"
                raise HostsUnavailable(reason) from None
            time.sleep(0.05)


def _remove_host(host: Host) -> None:
    if host.forwarder is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.forwarder.pid, signal.SIGKILL)
        host.forwarder.wait()
        host.forwarder = None
    _ip("netns", "del", host.namespace, check=False)
    _ip("link", "del", host.root_link, check=False)


def sweep() -> list[str]:
    """Remove namespaces and links left by runs whose process is gone; their names."""
    removed = []
    for name in _ip_lines("netns", "list"):
        name = name.split()[0] if name.strip() else ""
        match = NAMESPACE.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for line in _ip_lines("-o", "link", "show"):
        # "7: pgq123h1@if2: <...>": the name, without the peer's index
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        match = ROOT_LINK.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /30s of NETWORK that no interface of the root namespace is on."""
    used = []
    for line in _ip_lines("-4", "-o", "addr", "show"):
        match = re.search(r"inet (\S+)", line)
        if match:
            used.append(ipaddress.ip_interface(match.group(1)).network)
    free = [s for s in NETWORK.subnets(new_prefix=30) if not any(s.overlaps(u) for u in used)]
    if len(free) < count:
        raise HostsUnavailable(f"only {len(free)} free /30s left in {NETWORK}")
    return free[:count]


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise HostsUnavailable(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _ip_lines(*args: str) -> list[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()
