"""The group a node founds when no group fits it (it keeps hosting it while the group has
live members, also after it migrated away)."""

from __future__ import annotations

import logging

from mycelium.client import RegistryError
from mycelium.fingerprint import ModelSpec
from mycelium.flower.errors import FlowerError, FlowerNotInstalled, FlowerTimeout, GroupHostError
from mycelium.flower.group_host import GroupHost
from mycelium.node.config import FatalNodeError, NodeConfig

logger = logging.getLogger(__name__)

MAX_FLOWER_FAILURES = 3  # consecutive Flower start-up failures before the agent gives up


class Founder:
    """Starts this node's group: its SuperLink, registry entry and open-ended run.

    What may heal is retried by the caller: the registry unreachable or refusing for now,
    and a Flower process that was too slow to get ready (a loaded machine), always; a Flower
    process that died or a ``flwr`` command that failed, up to :data:`MAX_FLOWER_FAILURES`
    times in a row (a port race heals, a broken installation does not). What cannot heal
    raises :class:`FatalNodeError`.
    """

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.flower_failures = 0

    def found(
        self,
        *,
        node_token: str | None,
        seed_model: bytes,
        spec: ModelSpec | None = None,
        task_name: str | None = None,
    ) -> GroupHost | None:
        """The started host, or None (one warning) after a failure that may heal. ``spec``
        and ``task_name`` are the node's model fingerprint and task name (the registry's)."""
        host = self._host(
            node_token=node_token, seed_model=seed_model, spec=spec, task_name=task_name
        )
        try:
            host.start()  # stops whatever it started before raising
        except FlowerNotInstalled as exc:
            raise FatalNodeError(str(exc)) from None
        except (RegistryError, FlowerTimeout) as exc:  # an outage, or a slow machine
            logger.warning("could not found a group: %s", exc)
            return None
        except (FlowerError, OSError) as exc:
            self._flower_failed(exc)
            return None
        self.flower_failures = 0
        return host

    def _host(
        self,
        *,
        node_token: str | None,
        seed_model: bytes,
        spec: ModelSpec | None,
        task_name: str | None,
    ) -> GroupHost:
        cfg = self.cfg
        try:
            return GroupHost(
                cfg.registry,
                name=f"{cfg.name}-group",
                task=task_name or cfg.task,
                model_spec=spec,
                max_capacity=cfg.max_capacity,
                join_policy=cfg.join_policy,
                performance_threshold=cfg.performance_threshold,
                work_dir=cfg.work_dir / "group",
                seed_model=seed_model,
                run_config=cfg.group_run_config,
                creator_token=node_token,
                host=cfg.host,
                public_host=cfg.public_host,
                insecure=cfg.insecure,
                registry_ca=cfg.registry_ca,
            )
        except GroupHostError as exc:  # a refused --host/--public-host: not going to heal
            raise FatalNodeError(str(exc)) from None

    def _flower_failed(self, exc: Exception) -> None:
        self.flower_failures += 1
        if self.flower_failures >= MAX_FLOWER_FAILURES:
            raise FatalNodeError(
                f"could not found a group {self.flower_failures} times in a row: {exc}"
            ) from None
        logger.warning(
            "could not found a group (attempt %s of %s): %s",
            self.flower_failures,
            MAX_FLOWER_FAILURES,
            exc,
        )
