"""What a demo run is asked to do: :class:`DemoConfig` and the plan of its nodes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from mycelium import config as defaults


def default_duration(nodes: int) -> float:
    """Three minutes to settle after 3 s per node for the start (nodes start 2 s apart;
    the rest is slack for a busy machine): 198 s for 6 nodes, 276 s for 32 (which settled
    in 240 s in ``bench scale``)."""
    return 3.0 * nodes + 180.0


@dataclass(frozen=True)
class DemoConfig:
    """A demo run; every path is made absolute when the config is created."""

    nodes: int = 6
    task: str = defaults.TASK  # a task reference (docs/tasks.md), passed to every node
    scenario: str = defaults.SCENARIO
    clusters: int = defaults.CLUSTERS
    duration: float | None = None  # None: default_duration(nodes)
    seed: int = 0
    port: int | None = None
    keep_running: bool = False
    # Agents forked from one process that imported torch once (mycelium.zygote): shared
    # pages, no import per agent. False: each agent its own interpreter.
    fork_agents: bool = True
    run_dir: Path | None = None
    report_path: Path | None = None
    plot_path: Path | None = None
    heartbeat_interval: float = 2.0
    evaluation_interval: float = 10.0
    cooldown: float = 30.0
    node_ttl: float = 10.0
    group_ttl: float = 40.0
    misplace: bool = True
    # Each node holds 1/(shards_per_node x nodes) of the digits: scarce local data is
    # where federation pays off (with 6 nodes a node's local-only model is ~0.8, not ~0.96).
    shards_per_node: int = 4

    @property
    def time_budget(self) -> float:
        """``duration``, or :func:`default_duration` of the node count."""
        return default_duration(self.nodes) if self.duration is None else self.duration

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                object.__setattr__(self, f.name, value.expanduser().resolve())


@dataclass(frozen=True)
class NodeSpec:
    """One demo node: its name, latent cluster and data shard."""

    name: str
    cluster: int
    index: int
    misplaced: bool = False


def plan_nodes(config: DemoConfig) -> list[NodeSpec]:
    """Nodes round-robin over clusters; the last one starts in a wrong group."""
    if config.nodes < 1 or config.clusters < 1:
        raise ValueError("need at least one node and one cluster")
    specs = [NodeSpec(f"n{i}", i % config.clusters, i) for i in range(config.nodes)]
    can_misplace = config.misplace and config.clusters > 1 and config.nodes > config.clusters
    if can_misplace:
        last = specs[-1]
        specs[-1] = NodeSpec(last.name, last.cluster, last.index, misplaced=True)
    return specs
