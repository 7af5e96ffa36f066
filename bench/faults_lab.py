"""The lab that ``bench faults``' scenarios and the chaos soak share: its hosts and agents,
the group they form before a fault, and small readers of what the registry shows."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.faults_report import Settings
from bench.net_bench import until
from mycelium.api import EventPublic, NodePublic
from mycelium.lab import stack as lab
from mycelium.lab.faults import unavailable_reason
from mycelium.lab.netns import Network
from mycelium.procs import ManagedProcess

MEMBERS = 3
AGENTS = (("hostA", "a0"), ("hostB", "b0"), ("hostC", "c0"))  # a0 founds; the view is hostB's
CUT = AGENTS[2]  # the partitioned member: not the group's host, not the view's host
FAILED = frozenset({"group_failed", "dissolved"})
LEFT = frozenset({"left", "evicted", "migrated"})
PARTITION_GROUP_TTL_S = 30.0
FOUR = (*AGENTS, ("hostD", "d0"))  # mass partition: four hosts, half of them cut
MASS_CUT = ("hostC", "hostD")
LOSSY_HOST = "hostC"  # kill_lossy: lossy while a0's host dies
SP_STARTED, SP_ENDED = "self_preservation_started", "self_preservation_ended"


# -- the lab --------------------------------------------------------------------------------
def check_lab() -> None:
    """:class:`BenchError` with the reason when the lab cannot run here."""
    reason = unavailable_reason()
    if reason:
        raise BenchError(f"network namespaces or their fault tools unavailable: {reason}")
    if shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None:
        raise BenchError("nginx is not installed (TLS group hosts need it; Debian: nginx-light)")


@dataclass(frozen=True)
class Formed:
    network: Network
    view: lab.RegistryView
    registry: ManagedProcess
    gid: int
    agents: dict[str, ManagedProcess]


@contextmanager
def formed_group(
    work: Path,
    settings: Settings,
    group_ttl: float,
    agents: Sequence[tuple[str, str]] = AGENTS,
    members: int = MEMBERS,
) -> Iterator[Formed]:
    """A lab with the registry (``settings.node_ttl_s``, ``group_ttl``) and ``agents``
    (a0 first: it founds the group) on their hosts; yielded once a0's group trained two
    rounds with ``members`` of them (every agent in a group)."""
    hosts = ("reg", *dict.fromkeys(host for host, _ in agents))
    with ExitStack() as stack:
        network = stack.enter_context(Network(hosts))
        view, _, registry = stack.enter_context(
            lab.https_registry(network, work, node_ttl=settings.node_ttl_s, group_ttl=group_ttl)
        )
        gid: int | None = None
        procs: dict[str, ManagedProcess] = {}
        for index, (host, name) in enumerate(agents):
            procs[name] = stack.enter_context(
                lab.agent_in(
                    network, host, work, view, name=name, cluster=0, index=index,
                    partitions=max(4, len(agents)), seed=settings.seed,
                )
            )  # fmt: skip
            if gid is None:
                gid = until(lambda: view.group_of("a0"), 300, "a0 founds a group")
        names = [name for _, name in agents]
        until(lambda: all(view.group_of(n) == gid for n in names), 300, "all join a0")
        assert gid is not None
        group = gid
        until(lambda: len(view.full_rounds(group, members)) >= 2, 300, f"2 rounds of {members}")
        yield Formed(network, view, registry, group, procs)


def sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def node_named(nodes: list[NodePublic], name: str) -> NodePublic:
    return next(n for n in nodes if n.name == name)


def event_types(events: list[EventPublic]) -> list[str]:
    return sorted({e.type for e in events})
