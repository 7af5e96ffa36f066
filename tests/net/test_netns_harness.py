"""The namespace network itself: isolated, routable between hosts only, torn down, and able
to tell a TLS listener from a plain one and a loopback listener from a public one.

Every request below is made by a process inside a namespace (``network.probe``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mycelium.lab.netns import PROBE, Network
from mycelium.net.certs import fingerprint, write_network_certs
from mycelium.procs import ManagedProcess, wait_for


@contextmanager
def served(
    network: Network, host: str, bind: str, port: int, log: Path, *tls: str
) -> Iterator[ManagedProcess]:
    """``probe.py serve`` inside ``host`` on ``bind:port``; up when ``ss`` (inside) lists it."""
    args = [sys.executable, str(PROBE), "serve", "--host", bind, "--port", str(port), *tls]
    proc = ManagedProcess(f"serve:{host}", network.command(host, args), log_path=log).start()
    try:
        wait_for(
            lambda: proc.is_running() and (bind, port) in network.listening(host),
            timeout=30,
            what=f"server on {bind}:{port} in {host}",
        )
        yield proc
    finally:
        proc.stop(timeout=5)


def test_hosts_reach_each_other_and_nothing_else(network: Network) -> None:
    for host in network.hosts.values():
        routes = network.routes(host.name)
        assert "default" not in routes, routes
        assert routes.strip().startswith("198.18.0.0/24"), routes
    # The main namespace carries none of these addresses.
    main = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=10)
    assert "198.18.0." not in main.stdout
    # Off the /24 there is no route at all: the kernel refuses before any packet leaves.
    off_net = network.probe("hostA", "tcp", "198.18.1.1", 80, "--timeout", 2)
    assert off_net["open"] is False and "unreachable" in off_net["error"].lower()


def test_https_listener_reached_across_hosts_refuses_plain_http(
    network: Network, tmp_path: Path
) -> None:
    reg = network["reg"]
    certs = write_network_certs(tmp_path / "certs", [reg.address])
    port = network.free_port("reg")
    tls = ("--cert", str(certs.server_cert), "--key", str(certs.server_key))
    with served(network, "reg", reg.address, port, tmp_path / "https.log", *tls):
        url = f"https://{reg.address}:{port}/"
        ok = network.probe("hostA", "get", url, "--ca", certs.ca)
        assert ok.get("status") == 200 and '"scheme": "https"' in ok["body"], ok
        # Not trusted without the network CA; plain HTTP to the TLS port gets no answer.
        untrusted = network.probe("hostA", "get", url)
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.get("error", ""), untrusted
        plain = network.probe("hostA", "get", f"http://{reg.address}:{port}/")
        assert "status" not in plain and plain.get("error"), plain
        presented = network.probe("hostB", "cert", f"{reg.address}:{port}")
        assert presented == {"sha256": fingerprint(certs.server_cert.read_bytes())}


def test_loopback_listener_is_invisible_to_other_hosts(network: Network, tmp_path: Path) -> None:
    reg = network["reg"]
    port = network.free_port("reg")
    with served(network, "reg", "127.0.0.1", port, tmp_path / "lo.log"):
        assert network.probe("reg", "tcp", "127.0.0.1", port)["open"] is True
        assert network.probe("hostA", "tcp", reg.address, port)["open"] is False
        assert network.probe("hostA", "tcp", "127.0.0.1", port)["open"] is False


def test_teardown_removes_namespaces_and_their_processes(
    netns_reason: str | None, tmp_path: Path
) -> None:
    if netns_reason:
        pytest.skip(f"network namespaces unavailable: {netns_reason}")
    with Network(("solo",)) as net:
        names = {net.bridge_netns, net["solo"].netns}
        sleeper = subprocess.Popen(net.command("solo", ["sleep", "300"]))
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert names <= {line.split()[0] for line in listed.splitlines() if line}
    try:
        assert sleeper.wait(timeout=10) == -9  # killed by the teardown, not left behind
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not names & {line.split()[0] for line in listed.splitlines() if line}
