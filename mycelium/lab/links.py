"""The kernel's tools that fault a lab host's link (:mod:`mycelium.lab.netns`), each
returning what undoes it: an nftables table in the lab's switch, tc queues on both ends of
the link, the check for ``tc netem``, and :func:`leftovers`, what a namespace still holds.
:mod:`mycelium.lab.faults` names these as faults; tests and benches use that.

Rules live in the switch (the bridge namespace), on the host's port, so a drop is silent as
on a real wire: a rule in the sender's own output hook would fail its ``sendto`` with EPERM.
A queue on the host's ``eth0`` shapes what it sends; one on the switch's port, what it
receives.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable

from mycelium.lab.netns import Network

TOOL_TIMEOUT = 10.0
RANDOM_SPAN = 1_000_000  # loss is drawn as numgen random mod this: shares in steps of 1e-6
_tables = itertools.count(1)


class FaultError(RuntimeError):
    """A lab fault could not be applied or undone, or names a host or process the lab does
    not have (the message says which, with the tool's own error)."""


def missing_tool() -> str | None:
    """Why the link tools cannot run here (``nft`` or ``tc`` not installed), or None."""
    for tool, package in (("nft", "nftables"), ("tc", "iproute2")):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin") is None:
            return f"the `{tool}` command is not installed (Debian: apt-get install {package})"
    return None


def run_tool(netns: str, args: list[str], stdin: str | None = None) -> None:
    """Run a tool inside ``netns``; raise :class:`FaultError` with its stderr on failure."""
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FaultError(f"{' '.join(args)} in {netns}: {exc}") from exc
    if proc.returncode != 0:
        raise FaultError(f"{' '.join(args)} in {netns} failed: {proc.stderr.strip()}")


def _output(netns: str, args: list[str]) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *args],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        stdin=subprocess.DEVNULL,
    ).stdout


def switch_rules(network: Network, rules: list[str]) -> Callable[[], None]:
    """``rules`` in a table of their own on the switch's forward hook; the returned call
    deletes exactly that table."""
    table = f"mycelium_fault_{next(_tables)}"
    body = "\n".join(f"    {rule}" for rule in rules)
    script = (
        f"table bridge {table} {{\n  chain forward {{\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f"{body}\n  }}\n}}\n"
    )
    netns = network.bridge_netns
    run_tool(netns, ["nft", "-f", "-"], stdin=script)
    return lambda: run_tool(netns, ["nft", "delete", "table", "bridge", table])


def loss_rules(network: Network, host: str, share: float, direction: str) -> list[str]:
    """Drop ``share`` of what leaves ``host`` (``out``), enters it (``in``) or both, each
    packet on its own draw."""
    port = network.bridge_port(host)
    threshold = round(share * RANDOM_SPAN)
    draw = f"numgen random mod {RANDOM_SPAN} < {threshold} drop"
    out, into = f'iifname "{port}" {draw}', f'oifname "{port}" {draw}'
    return {"out": [out], "in": [into], "both": [out, into]}[direction]


def partition_rules(network: Network, a: str, b: str, *, oneway: bool) -> list[str]:
    """Drop what ``a`` sends to ``b`` and, unless ``oneway``, what ``b`` sends to ``a``."""
    addr_a, addr_b = network[a].address, network[b].address
    rules = [f"ip saddr {addr_a} ip daddr {addr_b} drop"]
    if not oneway:
        rules.append(f"ip saddr {addr_b} ip daddr {addr_a} drop")
    return rules


def link_queues(network: Network, host: str, kind: str, params: list[str]) -> Callable[[], None]:
    """A root qdisc ``kind params`` on both ends of ``host``'s link; the returned call
    deletes them (a half-made pair is deleted before the error is raised)."""
    ends = [(network[host].netns, "eth0"), (network.bridge_netns, network.bridge_port(host))]
    added: list[tuple[str, str]] = []

    def undo() -> None:
        errors = []
        for netns, dev in reversed(added):
            try:
                run_tool(netns, ["tc", "qdisc", "del", "dev", dev, "root"])
            except FaultError as exc:
                errors.append(exc)
        added.clear()
        if errors:
            raise errors[0]

    try:
        for netns, dev in ends:
            run_tool(netns, ["tc", "qdisc", "add", "dev", dev, "root", kind, *params])
            added.append((netns, dev))
    except BaseException:
        undo()
        raise
    return undo


def tbf_params(bits_per_s: int) -> list[str]:
    """tbf's rate, a bucket of 20 ms of traffic (at least 16 KiB, a few segments) and
    50 ms of queue before it drops."""
    burst = max(bits_per_s // 8 // 50, 16 * 1024)
    return ["rate", f"{bits_per_s}bit", "burst", str(burst), "latency", "50ms"]


def netem_params(delay_s: float, bits_per_s: int | None) -> list[str]:
    params = ["delay", f"{delay_s * 1000:.3f}ms"]
    return params + (["rate", f"{bits_per_s}bit"] if bits_per_s else [])


def has_netem(network: Network) -> bool:
    """Whether this kernel has ``tc netem`` (tried on a host's loopback, then removed)."""
    netns = next(iter(network.hosts.values())).netns
    try:
        run_tool(netns, ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    except FaultError:
        return False
    run_tool(netns, ["tc", "qdisc", "del", "dev", "lo", "root"])
    return True


def leftovers(network: Network) -> dict[str, str]:
    """Per namespace of ``network`` (hosts by name, the switch as ``bridge``), the nftables
    rules and tbf/netem queues it still holds; empty when no fault is left."""
    found = {}
    spaces = {name: host.netns for name, host in network.hosts.items()}
    spaces["bridge"] = network.bridge_netns
    for name, netns in spaces.items():
        rules = _output(netns, ["nft", "list", "ruleset"]).strip()
        queues = [
            line
            for line in _output(netns, ["tc", "qdisc", "show"]).splitlines()
            if " tbf " in line or " netem " in line
        ]
        if rules or queues:
            found[name] = "\n".join([rules, *queues]).strip()
    return found
