"""A real network cut between a simulated host and the PostgreSQL server, for partition tests.

A process tree started with `ns.prefix + [cmd...]` runs in its own network namespace, linked to
this machine by a veth pair; it reaches the server at `ns.server_ip` (the host side of the pair;
the server listens on every address). `ns.cut()` makes packets stop flowing both ways without
anyone being told: no RST, no ICMP, no error on send. That is what a pulled cable or a dead
switch looks like, and the only kind of partition worth testing: a reset connection is just a
crash. `ns.heal()` restores the link.

    reason = available()          # None, or why namespaces cannot be used here
    with NetNs("part") as ns:
        proc = subprocess.Popen([*ns.prefix, sys.executable, "-c", "..."])
        ns.cut(); ...; ns.heal()

How the cut stays silent (checked by tests/unit/test_pgharness.py):
- the host side of the veth is set down. Frames the namespace sends are then dropped by the
  veth driver (its peer is down) and its own link merely loses carrier, so its routes and
  sockets stay as they were: clients inside see silence, not errors;
- on the host, setting the link down removes the connected route to the namespace. Without
  more, the server's replies would then follow the default route off the machine (to a
  private address nobody here owns). A blackhole route for the /30 with a worse metric than
  the connected one catches them instead: while the link is up it is shadowed, once it is down
  the server's packets are discarded silently, and its sends still succeed.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

from tests.pgharness import pid_alive

__all__ = ["NetNs", "available"]

# Namespace names are "mpjns-<prefix>-<pid>-<n>": the pid lets a later run remove leftovers of
# a crashed one (its pid is gone).
_MARK = "mpjns-"
# /30 subnets are taken from this range, first free one first.
_POOL = ipaddress.IPv4Network("10.254.0.0/16")
_BLACKHOLE_METRIC = "4242"
_LOCK_PATH = (Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())) / (
    "mpjobs-netns.lock"
)

_live: weakref.WeakSet[NetNs] = weakref.WeakSet()
_counter = 0
_counter_lock = threading.Lock()
_probe: list[str | None] = []  # the one answer of available(), once probed


def _ip_path() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None
    )


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = _ip_path()
    if ip is None:
        raise RuntimeError("the `ip` command (iproute2) is not installed")
    done = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def available() -> str | None:
    """None if network namespaces with veth pairs can be made here, else the reason.

    Probes once per process by making (and removing) a real namespace: being root is not
    enough inside a container without CAP_NET_ADMIN or with /run/netns read-only.
    """
    if _probe:
        return _probe[0]
    reason: str | None
    if os.geteuid() != 0:
        reason = "network namespaces need root"
    elif _ip_path() is None:
        reason = "the `ip` command (iproute2) is not installed"
    else:
        try:
            NetNs("probe").close()
            reason = None
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            reason = f"cannot create a network namespace here: {exc}"
    _probe.append(reason)
    return reason


def _remove_stale() -> None:
    """Delete namespaces (their veths go with them) and routes left by runs now gone."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(re.escape(_MARK) + r".*-(\d+)-\d+", name)
        if m and not pid_alive(int(m.group(1))):
            _ip("netns", "delete", name, check=False)
    for line in _ip("-4", "route", "show", "type", "blackhole", check=False).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and f"metric {_BLACKHOLE_METRIC}" in line:
            net = ipaddress.IPv4Network(fields[1], strict=False)
            if net.subnet_of(_POOL) and not _subnet_in_use(net):
                _ip("route", "delete", "blackhole", str(net), "metric", _BLACKHOLE_METRIC,
                    check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network an address or a route (any table) of this machine covers."""
    nets: list[ipaddress.IPv4Network] = []
    for line in _ip("-o", "-4", "addr", "show", check=False).stdout.splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            nets.append(ipaddress.IPv4Interface(m.group(1)).network)
    for line in _ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        # "DEST ..." or "TYPE DEST ..." (local, broadcast, blackhole, ...); "default" covers
        # everything and is no reason to avoid a subnet.
        for field in line.split()[:2]:
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(field, strict=False))
                break
    return nets


def _subnet_in_use(net: ipaddress.IPv4Network) -> bool:
    host = next(net.hosts())
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    return f"inet {host}/" in out


class NetNs:
    """A network namespace joined to this machine by a veth pair, which cut() silences.

    Subnet: the first free 10.254.X.Y/30 (host side .1, namespace side .2), picked under a file
    lock so parallel test processes never share one.
    """

    def __init__(self, name_prefix: str = "ns") -> None:
        global _counter
        with _counter_lock:
            _counter += 1
            n = _counter
        clean = re.sub(r"[^A-Za-z0-9]", "", name_prefix)[:20] or "ns"
        self.name = f"{_MARK}{clean}-{os.getpid()}-{n}"
        tag = secrets.token_hex(4)
        self.host_if = f"mpjh{tag}"  # 12 characters: interface names hold at most 15
        self.ns_if = f"mpjn{tag}"
        self._owner = os.getpid()
        self._closed = False
        self._cut = False
        self._created: list[str] = []
        with open(_LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _remove_stale()
            self.subnet = self._free_subnet()
            hosts = list(self.subnet.hosts())
            self.server_ip = str(hosts[0])
            self.ns_ip = str(hosts[1])
            try:
                self._create()
            except BaseException:
                self.close()
                raise
        _live.add(self)

    @property
    def prefix(self) -> list[str]:
        """Put before a command to run it (and all it starts) inside the namespace."""
        return [_ip_path() or "ip", "netns", "exec", self.name]

    @property
    def is_cut(self) -> bool:
        return self._cut

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used = _used_networks()
        for net in _POOL.subnets(new_prefix=30):
            if not any(net.overlaps(u) for u in used):
                return net
        raise RuntimeError(f"no free /30 left in {_POOL}")

    def _create(self) -> None:
        plen = self.subnet.prefixlen
        _ip("netns", "add", self.name)
        self._created.append("netns")
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._created.append("veth")
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.server_ip}/{plen}", "dev", self.host_if)
        _ip("route", "add", "blackhole", str(self.subnet), "metric", _BLACKHOLE_METRIC)
        self._created.append("blackhole")
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/{plen}", "dev", self.ns_if)
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "link", "set", self.ns_if, "up")

    def cut(self) -> None:
        """Stop all packets both ways, silently; established connections stay open, mute."""
        _ip("link", "set", self.host_if, "down")
        self._cut = True

    def heal(self) -> None:
        """Let packets flow again (connections still alive on both ends carry on)."""
        _ip("link", "set", self.host_if, "up")
        self._cut = False

    def close(self) -> None:
        """Remove the namespace, the veth pair and the route. Idempotent; only the creator does."""
        if self._closed or os.getpid() != self._owner:
            return
        self._closed = True
        if "veth" in self._created:
            # Deleting one end deletes both; done first because netns deletion is asynchronous.
            _ip("link", "delete", self.host_if, check=False)
        if "blackhole" in self._created:
            _ip("route", "delete", "blackhole", str(self.subnet), "metric", _BLACKHOLE_METRIC,
                check=False)
        if "netns" in self._created:
            _ip("netns", "delete", self.name, check=False)
        _live.discard(self)

    def __enter__(self) -> NetNs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetNs({self.name}, server_ip={self.server_ip}, cut={self._cut})"


@atexit.register
def _close_all() -> None:
    for ns in list(_live):
        with contextlib.suppress(Exception):
            ns.close()
