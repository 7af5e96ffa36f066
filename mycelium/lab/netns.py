"""A private network of "hosts" made of Linux network namespaces, for tests.

Each host is a namespace with one veth interface (``eth0``) on 198.18.0.0/24 (the range
reserved for benchmarking, RFC 2544), plugged into a bridge that lives in a namespace of
its own. No namespace has a default route, so nothing can leave this network; the main
namespace is never touched (the veth pairs are made inside the bridge namespace) and the
harness itself never opens a socket: every connection of a test is made by a process run
inside a namespace (:meth:`Network.run`, :meth:`Network.command`).

Namespace names carry the test process's pid, so parallel test runs do not collide and
namespaces left by a killed run are removed by the next one (:func:`remove_stale`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SUBNET = ipaddress.ip_network("198.18.0.0/24")
FIRST_HOST = 10  # 198.18.0.10 is the first host's address
PREFIX = "mycnet"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-")
IP_TIMEOUT = 10.0
PROBE = Path(__file__).resolve().parent / "probe.py"


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (message says why)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can (probed by making one)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_SYS_ADMIN)"
    probe = f"{PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:6]}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def remove_stale() -> list[str]:
    """Delete namespaces this harness made in runs whose process is gone."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    stale = []
    for line in listed:
        name = line.split(" ", 1)[0]
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _kill_namespace_pids(name)
            _ip("netns", "delete", name, check=False)
            stale.append(name)
    return stale


def _kill_namespace_pids(netns: str) -> None:
    """SIGKILL what still runs in a namespace we made (only ever our own children)."""
    out = _ip("netns", "pids", netns, check=False).stdout.split()
    for pid in (int(p) for p in out if p.isdigit()):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass(frozen=True)
class Host:
    """One namespace standing for one machine."""

    name: str  # logical name in the test: "reg", "hostA"
    netns: str  # real namespace name
    address: str  # its 198.18.0.x address


class Network:
    """Namespaces ``hosts`` on one bridge; use as a context manager (torn down on exit)."""

    def __init__(self, hosts: Sequence[str] = ("reg", "hostA", "hostB", "hostC")) -> None:
        if len(set(hosts)) != len(hosts) or not hosts:
            raise ValueError("host names must be distinct and non-empty")
        tag = f"{PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.bridge_netns = f"{tag}-br"
        self.hosts: dict[str, Host] = {
            name: Host(name, f"{tag}-{name}", str(SUBNET[FIRST_HOST + i]))
            for i, name in enumerate(hosts)
        }
        self._made: list[str] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Network:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        remove_stale()
        self._add_netns(self.bridge_netns)
        br = self.bridge_netns
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        _ip("-n", br, "link", "set", "lo", "up")
        for host in self.hosts.values():
            self._plug(host, self.bridge_port(host.name))
        logger.debug("network %s up: %s", br, {h.name: h.address for h in self.hosts.values()})

    def bridge_port(self, host: str) -> str:
        """The bridge's end of ``host``'s veth (inside :attr:`bridge_netns`): what leaves
        it enters the host, so a queue there shapes the host's incoming traffic."""
        return f"p{list(self.hosts).index(host)}"

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)

    def _plug(self, host: Host, port_name: str) -> None:
        """A veth pair made inside the bridge namespace, its peer moved to the host's."""
        self._add_netns(host.netns)
        br = self.bridge_netns
        _ip("-n", br, "link", "add", port_name, "type", "veth", "peer", "name", "eth0",
            "netns", host.netns)  # fmt: skip
        _ip("-n", br, "link", "set", port_name, "master", "br0")
        _ip("-n", br, "link", "set", port_name, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/{SUBNET.prefixlen}", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")

    def stop(self) -> None:
        """Kill what still runs inside, delete every namespace (their veths go with them)."""
        for name in reversed(self._made):
            _kill_namespace_pids(name)
        for name in reversed(self._made):
            _ip("netns", "delete", name, check=False)
        self._made.clear()

    # -- running things inside ------------------------------------------------------------
    def command(self, host: str, args: Sequence[str]) -> list[str]:
        """argv that runs ``args`` inside ``host``'s namespace (``ip netns exec`` execs the
        command in place: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.hosts[host].netns, *map(str, args)]

    def run(
        self, host: str, args: Sequence[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside ``host`` to completion (output captured, never raises on a
        non-zero exit)."""
        return subprocess.run(
            self.command(host, args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def probe(self, host: str, *args: object, timeout: float = 30.0) -> dict[str, Any]:
        """Run ``mycelium/lab/probe.py ARGS`` inside ``host``; its JSON answer."""
        proc = self.run(host, [sys.executable, str(PROBE), *map(str, args)], timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"probe {args} in {host} exited {proc.returncode}: {proc.stderr}")
        answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return answer

    def free_port(self, host: str, bind: str | None = None) -> int:
        """A TCP port free on ``bind`` (default: ``host``'s address) inside ``host`` now."""
        return int(self.probe(host, "port", bind or self.hosts[host].address)["port"])

    def routes(self, host: str) -> str:
        return _ip("-n", self.hosts[host].netns, "route", "show").stdout

    def listening(self, host: str) -> list[tuple[str, int]]:
        """TCP sockets listening inside ``host``: (local address, port)."""
        out = self.run(host, ["ss", "-Hltn"], timeout=IP_TIMEOUT).stdout
        found = []
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                addr, _, port = fields[3].rpartition(":")
                found.append((addr.strip("[]"), int(port)))
        return found
