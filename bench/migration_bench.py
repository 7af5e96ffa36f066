"""Migration latency and per-node / per-group memory, with real node agents.

Three agents against one registry: ``a`` (cluster 0) and ``b`` (cluster 1) found a group
each; ``m`` (cluster 1) starts in ``a``'s group (``--join``) and migrates to ``b``'s.
Migration latency = from the registry's ``migrated`` event (the decision, committed) to the
first round of ``b``'s group that completes with both members. Target: at most one of
``b``'s rounds plus 10 s. RSS is VmRSS, PSS the proportional set size (shared pages by
their share), each summed over a process tree (/proc): a node = the
agent with its SuperNode and ClientApps; a group = SuperLink and ServerApp.
Used as a section of ``python mycelium_net.py bench flower``.
"""

from __future__ import annotations

import logging
import statistics
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from mycelium.api import EventPublic, RoundPublic
from mycelium.client import RegistryClient
from mycelium.launch import FAST_TIMERS, agent_process
from mycelium.procs import ManagedProcess, descendant_pids, tree_pss_mb, tree_rss_mb, wait_for

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT_S = 180.0
EXTRA_ROUNDS = 3


def agent(
    workdir: Path, url: str, name: str, cluster: int, index: int, join: int | None = None
) -> AbstractContextManager[ManagedProcess]:
    """A real node agent with fast timers (rotate digits, 2 clusters, 1/16 of the data)."""
    return agent_process(
        workdir,
        name=name,
        registry_url=url,
        scenario="rotate",
        clusters=2,
        cluster=cluster,
        partition=f"{index}/16",
        join=join,
        **FAST_TIMERS,
    )


def _group_of(client: RegistryClient, name: str) -> int | None:
    node = next((n for n in client.list_nodes() if n.name == name), None)
    return node.group_id if node and node.alive else None


def _group_pids(host_pid: int | None) -> list[int]:
    """The group's SuperLink and ServerApp among the descendants of the agent hosting it
    (the ServerApp is the agent's child beside the SuperLink: ``serverapp_exec``)."""
    found = []
    for pid in [] if host_pid is None else descendant_pids(host_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"flower-superlink" in cmd or b"flwr-serverapp" in cmd:
            found.append(pid)
    return found


def measure_migration(workdir: Path, url: str) -> dict[str, float]:
    """Run the three agents; return latency and memory figures."""
    client = RegistryClient(url)
    with ExitStack() as stack:
        stack.callback(client.close)
        host_a = stack.enter_context(agent(workdir, url, "a", 0, 0))
        group_a = wait_for(
            lambda: _group_of(client, "a"), timeout=SETTLE_TIMEOUT_S, what="a founds"
        )
        stack.enter_context(agent(workdir, url, "b", 1, 1))
        group_b = wait_for(
            lambda: _group_of(client, "b"), timeout=SETTLE_TIMEOUT_S, what="b founds"
        )
        mover = stack.enter_context(agent(workdir, url, "m", 1, 3, join=group_a))
        event = wait_for(
            lambda: _migration_event(client, group_b), timeout=SETTLE_TIMEOUT_S, what="m migrates"
        )
        first = wait_for(
            lambda: _first_round_with(client, group_b, 2, after=event.at),
            timeout=SETTLE_TIMEOUT_S,
            what="first round of b with m",
        )
        wait_for(
            lambda: len(_rounds_with(client, group_b, 2)) > EXTRA_ROUNDS,
            timeout=SETTLE_TIMEOUT_S,
            what="more rounds of b",
        )
        node_rss = tree_rss_mb(mover.pid) if mover.pid else 0.0
        node_pss = tree_pss_mb(mover.pid) if mover.pid else 0.0
        group = _group_pids(host_a.pid)
        group_rss = sum(tree_rss_mb(pid) for pid in group)
        group_pss = sum(tree_pss_mb(pid) for pid in group)
        times = [r.reported_at for r in _rounds_with(client, group_b, 2)]
    round_s = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
    latency = first.reported_at - event.at
    return {
        "migration latency s (decision -> first round in new group)": latency,
        "new group's median round s": round_s,
        "migration latency target s (one round + 10)": round_s + 10,
        "node RSS MB (agent + supernode tree)": node_rss,
        "group RSS MB (superlink + serverapp)": group_rss,
        "node PSS MB (agent + supernode tree)": node_pss,
        "group PSS MB (superlink + serverapp)": group_pss,
    }


def _migration_event(client: RegistryClient, to_group: int) -> EventPublic | None:
    events = client.events(limit=500)
    return next(
        (e for e in events if e.type == "migrated" and e.data.get("to_group_id") == to_group),
        None,
    )


def _rounds_with(client: RegistryClient, group_id: int, nodes: int) -> list[RoundPublic]:
    return [r for r in client.get_group(group_id).rounds if r.num_nodes >= nodes]


def _first_round_with(
    client: RegistryClient, group_id: int, nodes: int, *, after: float
) -> RoundPublic | None:
    rounds = [r for r in _rounds_with(client, group_id, nodes) if r.reported_at > after]
    return rounds[0] if rounds else None
