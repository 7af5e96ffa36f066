"""A node agent's configuration, the data it learns on, and its exception tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mycelium import config
from mycelium.client.endpoints import RegistryEndpoints
from mycelium.flower.protocol import RunConfig

if TYPE_CHECKING:
    from mycelium.learning.data import ClientData
    from mycelium.learning.tasks.base import Task


class NodeError(Exception):
    """Base of the errors of :mod:`mycelium.node`; every message is one line, no secret."""


class FatalNodeError(NodeError):
    """An error retrying cannot fix (a missing executable, an unusable data file, a refused
    registration): the agent cleans up and stops; ``mycelium node`` exits with code 1."""


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node agent needs; each field is also a ``node`` CLI option.

    ``work_dir`` and ``data_path`` are made absolute here, once: the agent's children
    (SuperNode, SuperLink, ``flwr``) never depend on the working directory.
    """

    name: str
    registry: RegistryEndpoints = RegistryEndpoints((config.REGISTRY_URL,))  # tried in order
    node_address: str | None = None
    task: str = config.TASK
    # Data: a slice of a clustered digits scenario, or the user's own .npz (x, y).
    scenario: str = config.SCENARIO
    clusters: int = config.CLUSTERS
    cluster: int = 0
    partition_index: int = 0
    partition_count: int = config.NODE_PARTITIONS
    seed: int = 0
    label_skew: float | None = None  # Dirichlet ALPHA of the labels inside the cluster
    personal: str = config.PERSONAL  # its personal model (mycelium.learning.personal)
    data_path: Path | None = None
    # Timing.
    heartbeat_interval: float = config.NODE_HEARTBEAT_INTERVAL_S
    group_evaluation_interval: float = config.GROUP_EVALUATION_INTERVAL_S
    status_interval: float = config.NODE_STATUS_INTERVAL_S
    cooldown: float = config.COOLDOWN_S
    warmup_epochs: int = config.WARMUP_EPOCHS
    # Policy and the group this node founds when none fits.
    performance_threshold: float = config.PERFORMANCE_THRESHOLD
    max_capacity: int = config.MAX_CAPACITY
    join_policy: str = config.JOIN_POLICY
    invite_code: str | None = field(default=None, repr=False)  # a secret: not in repr
    join_group: int | None = None
    max_candidates: int = config.MAX_CANDIDATES
    # Where the node keeps its Flower homes, logs and status.json.
    work_dir: Path = field(default_factory=lambda: config.RUNS_DIR / "node")
    # Across machines (mycelium.net): where a founded group's SuperLink binds and what it
    # advertises, the CA of an https registry, and explicit plaintext off loopback.
    host: str = config.GROUP_HOST
    public_host: str | None = None
    registry_ca: Path | None = None
    insecure: bool = False
    # The run config of a group this node founds: its aggregation strategy
    # (mycelium.learning.strategy) and round timing; its host fills in the registry fields.
    group_run_config: RunConfig = RunConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_dir", Path(self.work_dir).resolve())
        if self.registry_ca is not None:
            object.__setattr__(self, "registry_ca", Path(self.registry_ca).resolve())
        if self.data_path is not None:
            object.__setattr__(self, "data_path", Path(self.data_path).resolve())


def load_node_task(cfg: NodeConfig) -> Task:
    """The node's task (``cfg.task`` is a reference, see docs/tasks.md); FatalNodeError if
    it does not lead to a task."""
    from mycelium.learning.tasks.loader import TaskLoadError, load_task

    try:
        return load_task(cfg.task)
    except TaskLoadError as exc:
        raise FatalNodeError(str(exc)) from None


def load_node_data(cfg: NodeConfig, task: Task | None = None) -> ClientData:
    """The node's own data, through its task: the user's .npz or its slice of a clustered
    scenario. :class:`FatalNodeError` when the file or the scenario is unusable.
    """
    from mycelium.learning.tasks.base import DataRequest

    task = task if task is not None else load_node_task(cfg)
    request = DataRequest(
        scenario=cfg.scenario,
        clusters=cfg.clusters,
        index=cfg.partition_index,
        num_clients=cfg.partition_count,
        seed=cfg.seed,
        cluster=cfg.cluster,
        path=cfg.data_path,
        label_skew=cfg.label_skew,
    )
    try:
        return task.load_data(request)
    except (OSError, ValueError) as exc:
        raise FatalNodeError(f"unusable data: {exc}") from None
