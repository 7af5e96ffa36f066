"""Values that go into and come out of the store (frozen: nothing shares a mutable one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]
"""A read result shaped like the API's resource (``node_id``, ``group_id``, ...)."""


@dataclass(frozen=True)
class NodeCreatedRecord:
    node_id: int
    token: str


@dataclass(frozen=True)
class GroupCreatedRecord:
    group_id: int
    group_token: str
    invite_code: str | None


@dataclass(frozen=True)
class Heartbeat:
    node_id: int
    group_id: int | None
    accuracy: float | None
    loss: float | None
    num_samples: int
    round: int | None
    flower_node_id: int | None
    personal_accuracy: float | None = None


@dataclass(frozen=True)
class GroupSpec:
    name: str
    fleet_address: str
    task: str
    max_capacity: int
    join_policy: str
    performance_threshold: float
    certificate: str | None = None  # PEM the group's SuperLink presents (None: loopback)
    fingerprint: str | None = None
    model_spec: str | None = None  # JSON of mycelium.fingerprint.ModelSpec.to_json()
    strategy: str = "fedavg"
    strategy_params: str = "{}"  # JSON object of floats


@dataclass(frozen=True)
class RoundReport:
    round: int
    accuracy: float
    loss: float
    num_nodes: int
    num_examples: int


@dataclass(frozen=True)
class Model:
    sha256: str
    data: bytes
