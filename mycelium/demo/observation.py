"""A running demo's state (:class:`DemoRun`): its processes and what it sees of the network
(only through the registry's API), and when the network has settled."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mycelium import launch
from mycelium.api import EventPublic, GroupDetail, NodePublic
from mycelium.client import RegistryClient, RegistryError
from mycelium.demo.config import DemoConfig, NodeSpec
from mycelium.procs import ManagedProcess, tree_pss_mb
from mycelium.zygote import Zygote

logger = logging.getLogger(__name__)

# Stability: no membership change for a window of evaluation cycles, then at least
# STABLE_ROUNDS rounds in every group, whose accuracy is flat: group accuracy comes from
# members' small validation splits (one image is worth ~0.03), so means of FLAT_SPAN rounds
# are compared.
STABLE_CYCLES = 3
STABLE_ROUNDS = 6
FLAT_SPAN = 3
FLAT_ACCURACY = 0.03
MEMBERSHIP_EVENTS = ("joined", "left", "migrated", "evicted")


@dataclass
class Snapshot:
    """What the registry says at one moment (``at``: seconds since the demo started)."""

    at: float
    groups: list[GroupDetail]
    nodes: list[NodePublic]
    events: list[EventPublic]


def observe(client: RegistryClient, events: list[EventPublic], at: float) -> Snapshot:
    """Read groups (with members and rounds), nodes, and the events after ``events[-1]``
    (appended to ``events``, which the snapshot shares)."""
    groups = client.list_groups(limit=100)
    details = [client.get_group(g.group_id) for g in groups]
    nodes = client.list_nodes()
    since = events[-1].id if events else 0
    events.extend(client.events(since=since, limit=500))
    return Snapshot(at=at, groups=details, nodes=nodes, events=events)


def purity(members: list[str], clusters: dict[str, int]) -> float | None:
    """Share of a group's members from its majority cluster (None for an empty group)."""
    known = [clusters[m] for m in members if m in clusters]
    if not known:
        return None
    return max(known.count(c) for c in set(known)) / len(known)


def migrations(events: list[EventPublic]) -> list[EventPublic]:
    return [e for e in events if e.type == "migrated"]


def everyone_placed(names: Iterable[str], snap: Snapshot) -> bool:
    """Every named node is alive and in a group."""
    placed = {n.name for n in snap.nodes if n.group_id is not None and n.alive}
    return all(name in placed for name in names)


def is_stable(
    groups: list[GroupDetail], events: list[EventPublic], now: float, window: float
) -> bool:
    """The network has settled (all times in unix seconds):

    - no membership change (join, leave, migration, eviction) for ``window`` seconds;
    - every group with members completed ``STABLE_ROUNDS`` rounds since that change;
    - and its accuracy is flat: the mean of its last ``FLAT_SPAN`` rounds is within
      ``FLAT_ACCURACY`` of the mean of the ``FLAT_SPAN`` rounds before them.
    """
    changes = [e.at for e in events if e.type in MEMBERSHIP_EVENTS]
    if not changes or now - max(changes) < window:
        return False
    populated = [g for g in groups if g.members]
    return bool(populated) and all(_settled(g, max(changes)) for g in populated)


def _settled(group: GroupDetail, since: float) -> bool:
    accs = [r.accuracy for r in group.rounds if r.reported_at > since]
    if len(accs) < max(STABLE_ROUNDS, 2 * FLAT_SPAN):
        return False
    last, before = accs[-FLAT_SPAN:], accs[-2 * FLAT_SPAN : -FLAT_SPAN]
    return abs(sum(last) / FLAT_SPAN - sum(before) / FLAT_SPAN) <= FLAT_ACCURACY


class DemoFailed(RuntimeError):
    """A child of the demo exited while it should have been running (or never started).

    ``failure`` is the report's entry for it; ``report_path`` is set once the report of
    the failed run is written.
    """

    def __init__(self, message: str, failure: dict[str, Any]) -> None:
        super().__init__(message)
        self.failure = failure
        self.report_path: str | None = None

    @classmethod
    def exited(cls, proc: ManagedProcess) -> DemoFailed:
        code, cause = proc.returncode(), launch.last_meaningful_line(proc.read_log())
        message = (
            f"{proc.name} exited unexpectedly ({_describe_exit(code)}); "
            f"its last log line: {cause} (log {proc.log_path})"
        )
        failure = {"process": proc.name, "returncode": code, "cause": cause}
        return cls(message, failure | {"log": str(proc.log_path)})


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


MEMORY_SAMPLE_S = 2.0  # PSS walks every mapping of every process: not at every poll


@dataclass
class DemoRun:
    """The state of a running demo: its processes and what it has observed."""

    config: DemoConfig
    run_dir: Path
    registry_url: str = ""
    specs: list[NodeSpec] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)
    events: list[EventPublic] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    started_unix: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)
    peak_pss_mb: float = 0.0  # PSS: shared pages by their share (forked agents share)
    _memory_sampled: float = -MEMORY_SAMPLE_S
    last: Snapshot | None = None
    zygote: Zygote | None = None  # forks the agents (config.fork_agents)
    foreign: frozenset[int] = frozenset()
    """Children the calling process had before the demo (a test's database server, say):
    not the demo's to stop, nor are their descendants."""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check_children(self) -> None:
        """Raise :class:`DemoFailed` for the first child that is no longer running."""
        for proc in self.processes:
            if not proc.is_running():
                raise DemoFailed.exited(proc)

    def poll(self, client: RegistryClient) -> Snapshot | None:
        """Check the children, sample memory, read the registry (None if it did not answer)."""
        self.check_children()
        if self.elapsed() - self._memory_sampled >= MEMORY_SAMPLE_S:
            self._memory_sampled = self.elapsed()
            ours = tree_pss_mb(os.getpid()) - sum(tree_pss_mb(pid) for pid in self.foreign)
            self.peak_pss_mb = max(self.peak_pss_mb, ours)
        try:
            self.last = observe(client, self.events, self.elapsed())
        except RegistryError as exc:
            logger.warning("registry poll failed: %s", exc)
            return None
        return self.last
