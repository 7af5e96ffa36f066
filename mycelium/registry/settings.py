"""Settings of one registry process (defaults from :mod:`mycelium.config`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mycelium import config


@dataclass(frozen=True)
class Settings:
    db_path: Path | str  # a SQLite file, or a PostgreSQL URL (see store.database)
    node_ttl: float = config.NODE_TTL_S
    group_ttl: float = config.GROUP_TTL_S
    max_model_mb: float = config.MAX_MODEL_MB
    sweep_interval: float = 1.0
    flush_interval: float = config.REGISTRY_FLUSH_INTERVAL_S
    clock: Callable[[], float] = time.time
    # The credential of hosts that create groups without a node (``group`` command); None:
    # only nodes can create groups. Kept out of repr so that no log shows it.
    operator_token: str | None = field(default=None, repr=False)
    max_groups_per_node: int = config.MAX_GROUPS_PER_NODE
    self_preservation_threshold: float = config.SELF_PRESERVATION_THRESHOLD
    self_preservation_max_s: float = config.SELF_PRESERVATION_MAX_S

    @property
    def max_model_bytes(self) -> int:
        return int(self.max_model_mb * config.MiB)
