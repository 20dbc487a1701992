"""Hosts on one machine: Linux network namespaces joined by veth pairs to a bridge.

    with Network() as net:                  # NetnsUnavailable if this machine cannot
        a = net.host("a")                   # a namespace with one address, 198.18.N.2
        proc = net.spawn(a, [sys.executable, "-m", "http.server", "--bind", a.address],
                         log=path)
        net.link_down(a)                    # unplug its cable at the switch

The bridge lives in a namespace of its own (the "switch"), so nothing is bridged or
forwarded in the machine's own namespace, whose firewall rules are left alone. The test
process reaches the hosts through one more veth pair (``client_address`` in the machine's
namespace, plugged into the switch). Addresses are in 198.18.0.0/15, the range set aside
for network tests (RFC 2544): a /24 not used by any address or route of the machine.

Names carry the creating process's pid, so namespaces left by a killed run are removed by
the next one (``remove_stale``); ``close`` kills the spawned processes and deletes the
namespaces (with them every veth end inside) and the machine-side link, even after a
failure half-way.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PREFIX = "skyshard-t"
IP_TIMEOUT_S = 10.0


class NetnsUnavailable(Exception):
    """This machine (or this user) cannot create network namespaces and veth links."""


@dataclass(frozen=True)
class Host:
    """A namespace with one interface (``eth0``) holding ``address``; ``port`` is its
    cable's end in the switch namespace."""

    name: str
    netns: str
    address: str
    port: str

    def inode(self) -> int:
        """The namespace's inode: what ``/proc/self/ns/net`` of its processes shows."""
        return os.stat(f"/run/netns/{self.netns}").st_ino


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when worth trying."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; with ``check``, a failure is ``NetnsUnavailable``."""
    try:
        done = subprocess.run(["ip", *args], check=False, capture_output=True,
                              text=True, timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"`ip {' '.join(args)}`: {exc}") from exc
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def remove_stale() -> None:
    """Delete the namespaces (and end the processes in them) that this module made in
    processes that no longer run."""
    listed = ip("netns", "list", check=False).stdout
    for full, pid in re.findall(rf"^({re.escape(PREFIX)}(\d+)-\S+)", listed,
                                 re.MULTILINE):
        if not Path(f"/proc/{pid}").exists():
            delete_netns(full)


def delete_netns(name: str) -> None:
    """SIGKILL every process inside namespace ``name``, then delete it (with the veth
    ends in it, and so their peers)."""
    try:
        pids = ip("netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        ip("netns", "del", name, check=False)
    except NetnsUnavailable:  # `ip` hung or vanished: nothing more to do here
        pass


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 overlapping no address or route of this namespace."""
    text = ip("-4", "-o", "addr").stdout + ip("-4", "route").stdout
    used = [ipaddress.ip_network(m, strict=False)
            for m in re.findall(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", text)]
    candidates = list(ipaddress.ip_network("198.18.0.0/15").subnets(new_prefix=24))
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsUnavailable("no free /24 in 198.18.0.0/15")


class Network:
    """A switch namespace with a bridge, hosts plugged into it, and the test process's
    own link to it. Every failure of ``ip`` while building is ``NetnsUnavailable``."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        self.tag = f"{PREFIX}{os.getpid()}-{random.randrange(16**6):06x}"
        self.switch = f"{self.tag}-switch"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.hosts: dict[str, Host] = {}
        self.client_link: str | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self._next = 2

    def __enter__(self) -> Network:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        remove_stale()
        self.subnet = free_subnet()
        self._add_netns(self.switch)
        ip("netns", "exec", self.switch, "true")  # fails where /sys cannot be remounted
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        # The test process's cable: one end here, one in the switch.
        self.client_link = f"sk{random.randrange(16**8):08x}"
        ip("link", "add", self.client_link, "type", "veth", "peer", "name", "client",
           "netns", self.switch)
        self._plug("client")
        ip("addr", "add", f"{self.client_address}/{self.subnet.prefixlen}",
           "dev", self.client_link)
        ip("link", "set", self.client_link, "up")

    @property
    def client_address(self) -> str:
        assert self.subnet is not None
        return str(self.subnet[1])

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _plug(self, port: str) -> None:
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        ip("-n", self.switch, "link", "set", port, "up")

    def host(self, name: str) -> Host:
        """A new namespace with ``eth0`` (the next address) cabled to the switch."""
        assert self.subnet is not None and re.fullmatch(r"[a-z0-9]{1,8}", name)
        netns = f"{self.tag}-{name}"
        address = str(self.subnet[self._next])
        self._next += 1
        self._add_netns(netns)
        port = f"p-{name}"
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", netns)
        self._plug(port)
        ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(name, netns, address, port)
        self.hosts[name] = host
        return host

    def link_down(self, host: Host) -> None:
        """Unplug ``host`` at the switch: its packets go nowhere, nothing tells it so."""
        ip("-n", self.switch, "link", "set", host.port, "down")

    def link_up(self, host: Host) -> None:
        ip("-n", self.switch, "link", "set", host.port, "up")

    def spawn(self, host: Host, argv: list[str], *, log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` inside ``host``'s namespace, output to ``log``; killed on close."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", host.netns, *argv], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill what was spawned, delete the namespaces and the machine-side link."""
        for proc in self.procs:
            _kill_group(proc)
        self.procs.clear()
        for name in reversed(self.namespaces):
            delete_netns(name)
        self.namespaces.clear()
        if self.client_link is not None:  # gone with the switch; make sure
            try:
                if ip("link", "show", self.client_link, check=False).returncode == 0:
                    ip("link", "del", self.client_link, check=False)
            except NetnsUnavailable:
                pass
            self.client_link = None


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it if still there after 5 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    try:  # children of a nanny may outlive it in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def netns_inode() -> int:
    """The network namespace of the calling process (run on a worker)."""
    return os.stat("/proc/self/ns/net").st_ino
