"""The group a node founds when no group fits it (it keeps hosting it while the group has
live members, also after it migrated away)."""

from __future__ import annotations

import logging

from mycelium.client import RegistryError
from mycelium.fingerprint import ModelSpec
from mycelium.flower.errors import FlowerError, FlowerNotInstalled
from mycelium.flower.group_host import GroupHost
from mycelium.learning.strategy import StrategyConfig
from mycelium.node.config import NodeConfig
from mycelium.node.errors import FatalNodeError

logger = logging.getLogger(__name__)


def found_group(
    cfg: NodeConfig,
    *,
    node_token: str | None,
    seed_model: bytes,
    spec: ModelSpec | None = None,
    task_name: str | None = None,
) -> GroupHost | None:
    """Start a group for this node: its SuperLink, registry entry and open-ended run.

    None (logged) when it failed in a way that may heal (the registry unreachable, a Flower
    process that did not come up); :class:`FatalNodeError` when retrying cannot help.
    """
    host = GroupHost(
        cfg.registry_url,
        name=f"{cfg.name}-group",
        task=task_name or cfg.task,
        model_spec=spec,
        strategy=StrategyConfig.from_params(cfg.strategy, cfg.strategy_params),
        max_capacity=cfg.max_capacity,
        join_policy=cfg.join_policy,
        performance_threshold=cfg.performance_threshold,
        work_dir=cfg.work_dir / "group",
        seed_model=seed_model,
        run_config=cfg.group_run_config or None,
        node_token=node_token,
    )
    try:
        host.start()  # stops whatever it started before raising
    except FlowerNotInstalled as exc:
        raise FatalNodeError(str(exc)) from None
    except (FlowerError, RegistryError, OSError) as exc:
        logger.warning("could not found a group: %s", exc)
        return None
    return host
