"""The group a node trains in, and the ``flower-supernode`` child that connects it there."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mycelium.flower.errors import ChildExited, FlowerNotInstalled
from mycelium.flower.protocol import SuperNodeConfig
from mycelium.flower.supernode import PinFactory, SuperNode
from mycelium.node.config import FatalNodeError
from mycelium.node_keys import NodeKeyPair

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Membership:
    """The group this node trains in, and its SuperNode child."""

    group_id: int
    fleet_address: str
    supernode: SuperNode
    root_certificates: Path | None = None  # the group's published certificate (TLS)
    key: NodeKeyPair | None = None  # this membership's SuperNode key (a TLS group)


def start_supernode(
    fleet_address: str,
    *,
    trainer_url: str,
    work_dir: Path,
    name: str,
    root_certificates: Path | None = None,
    key: NodeKeyPair | None = None,
    pin: PinFactory | None = None,
) -> SuperNode:
    """Start a SuperNode whose ClientApps forward to ``trainer_url``; wait until it is
    connected (a warning if it is not: the agent's loop restarts it if it exits).

    :class:`FatalNodeError` when ``flower-supernode`` is not installed.
    """
    supernode = SuperNode(
        superlink_address=fleet_address,
        node_config=SuperNodeConfig(trainer_url=trainer_url),
        work_dir=work_dir,
        name=name,
        root_certificates=root_certificates,
        auth_private_key=key.private_key_path if key else None,
        pin=pin,
    )
    from mycelium.security.app_pin import PinError

    try:
        supernode.start()
    except (FlowerNotInstalled, PinError) as exc:  # no Flower, or our own app is unusable
        raise FatalNodeError(str(exc)) from None
    try:
        flower_id = supernode.wait_connected(timeout=CONNECT_TIMEOUT_S)
        logger.debug("SuperNode connected as Flower node %s", flower_id)
    except (TimeoutError, ChildExited) as exc:
        logger.warning("SuperNode did not connect to %s: %s", fleet_address, exc)
    return supernode
