"""Checks the across-machines tests make on a lab network (mycelium.lab.stack)."""

from __future__ import annotations

from pathlib import Path

from mycelium.lab.netns import Network
from mycelium.lab.stack import RegistryView
from mycelium.net.addresses import is_loopback, split_host_port
from mycelium.procs import ManagedProcess, descendant_pids


def supernode_argv(agent: ManagedProcess) -> list[str]:
    """The command line of the agent's running SuperNode (from /proc), or []."""
    assert agent.pid is not None
    for pid in descendant_pids(agent.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if any(a.endswith("flower-supernode") for a in argv):
            return argv
    return []


def supernode_root_certificates(agent: ManagedProcess) -> Path | None:
    """The ``--root-certificates`` file of the agent's running SuperNode."""
    argv = supernode_argv(agent)
    if "--root-certificates" in argv:
        return Path(argv[argv.index("--root-certificates") + 1])
    return None


def public_listeners(network: Network) -> list[tuple[str, str, int]]:
    """(host, address, port) of every TCP listener another host could reach."""
    found = []
    for name, host in network.hosts.items():
        for addr, port in network.listening(name):
            if is_loopback(addr):
                continue
            found.append((name, host.address if addr in ("*", "0.0.0.0", "::") else addr, port))
    return found


def assert_all_public_listeners_are_tls(network: Network) -> int:
    """A plain-HTTP request from another host to every public listener gets no HTTP
    answer, and a TLS handshake does: returns how many listeners were checked."""
    checked = 0
    for host, addr, port in public_listeners(network):
        other = next(h for h in network.hosts if h != host)
        plain = network.probe(other, "get", f"http://{addr}:{port}/", "--timeout", 5)
        assert "status" not in plain, f"{host} {addr}:{port} answers plain HTTP: {plain}"
        tls = network.probe(other, "cert", f"{addr}:{port}", "--timeout", 5)
        if "sha256" not in tls and not still_listening(network, host, port):
            # Closed since the listing (e.g. a dissolved group's SuperLink stopped):
            # nothing is exposed there any more.
            continue
        assert "sha256" in tls, f"{host} {addr}:{port} is not TLS: {tls}"
        checked += 1
    return checked


def still_listening(network: Network, host: str, port: int) -> bool:
    return any(p == port for _, p in network.listening(host))


def assert_nothing_advertises_loopback(view: RegistryView) -> None:
    for group in view.groups(include_dead=True):
        host, _ = split_host_port(group.fleet_address)
        assert not is_loopback(host), group.fleet_address
    for node in view.nodes():
        assert node.address is None or not is_loopback(node.address), node
