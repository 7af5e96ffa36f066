"""What a node does about groups: join, migrate, found, follow the registry, keep or stop
the group it hosts. Holds the node's :class:`Membership` and its hosted ``GroupHost``."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from mycelium.api import GroupPublic, NodeCreated
from mycelium.client import RegistryClient, RegistryError
from mycelium.learning import policy
from mycelium.node.admitted import AppPin, MembershipKeys, wait_admitted
from mycelium.node.config import NodeConfig
from mycelium.node.hosting import Founder
from mycelium.node.membership import Membership, start_supernode
from mycelium.node.placement import Placement, superlink_reachable
from mycelium.node_keys import NodeKeyPair

if TYPE_CHECKING:
    from mycelium.flower.group_host import GroupHost
    from mycelium.flower.supernode import SuperNode
    from mycelium.flower.trainer import LocalTrainer
    from mycelium.net.trust import GroupTrust

logger = logging.getLogger(__name__)
T = TypeVar("T")
REFUSED_LOG = "refused-runs.jsonl"  # in the work dir: one JSON line per group left


def safe(call: Callable[[], T]) -> T | None:
    """Run a registry call; log and return None when it fails."""
    try:
        return call()
    except RegistryError as exc:
        logger.warning("registry call failed: %s", exc)
        return None


class GroupActions:
    """The moves between groups of the registered node ``credentials``; ``report``
    heartbeats at once after a move (so the registry learns the new Flower node id without
    waiting for the next beat). ``pin``: the ClientApp every SuperNode is pinned to (also
    on loopback: cheaper, docs/security.md)."""

    def __init__(
        self,
        cfg: NodeConfig,
        registry: RegistryClient,
        placement: Placement,
        trainer: LocalTrainer,
        *,
        credentials: NodeCreated,
        trainer_url: str,
        report: Callable[[], None],
        trust: GroupTrust,
        pin: AppPin,
    ) -> None:
        self.cfg = cfg
        self.trust = trust
        self.registry = registry
        self.placement = placement
        self.trainer = trainer
        self.trainer_url = trainer_url
        self.report = report
        self.node_id = credentials.node_id
        self.node_token = credentials.token
        self.membership: Membership | None = None
        self.hosted: GroupHost | None = None
        self.founder = Founder(cfg)
        # TLS groups: a key per membership; our own ClientApp only; groups whose run
        # shipped another app, with the reason (never joined again by this agent).
        self.keys = MembershipKeys(cfg.work_dir / "keys")
        self.pin = pin
        self.refused_groups: dict[int, str] = {}

    def act(self, decision: policy.Decision, groups: list[GroupPublic]) -> None:
        """Carry out ``decision`` (taken on ``groups``)."""
        by_id = {g.group_id: g for g in groups}
        if decision.action == "found":
            # Re-forming after our group vanished keeps what that group had learned.
            self.found(decision, reform=self.placement.current_group_vanished())
        elif decision.action in ("join", "migrate") and decision.group_id in by_id:
            target = by_id[decision.group_id]
            if self.membership is None:
                self.join(target, reason=decision.reason, invite=self.cfg.invite_code)
            else:
                self.migrate(target, decision)

    def join(
        self, group: GroupPublic, *, reason: str, invite: str | None, move: bool = True
    ) -> None:
        root = self._trusted_root(group)
        if root is False:
            return
        key = self._membership_key(group.group_id, root)
        try:
            self.registry.join_group(
                group.group_id,
                self.node_id,
                invite_code=invite,
                public_key=key.public_key if key else None,
            )
        except RegistryError as exc:
            logger.warning("could not join group %s: %s", group.group_id, exc)
            return
        if move:
            self.placement.record_move(group.group_id)
        self.attach(group, root, key)
        logger.info("joined group %s (%s): %s", group.group_id, group.name, reason)

    def migrate(self, target: GroupPublic, decision: policy.Decision) -> None:
        assert self.membership is not None
        source = self.membership.group_id
        root = self._trusted_root(target)
        if root is False:
            return
        key = self._membership_key(target.group_id, root)
        try:
            self.registry.migrate(
                self.node_id,
                to_group_id=target.group_id,
                reason=decision.reason,
                expected_gain=decision.expected_gain,
                invite_code=self.cfg.invite_code,
                public_key=key.public_key if key else None,
            )
        except RegistryError as exc:
            logger.warning("migration to group %s refused: %s", target.group_id, exc)
            return
        self.stop_supernode()
        self.placement.record_move(target.group_id)
        self.attach(target, root, key)
        logger.info(
            "migrated from group %s to group %s, expected gain %+.3f (%s)",
            source,
            target.group_id,
            decision.expected_gain,
            decision.reason,
        )

    def found(self, decision: policy.Decision, *, reform: bool) -> None:
        if self.hosted is not None:
            return  # already hosting one: the policy will join it once it has a model
        host = self.founder.found(
            node_token=self.node_token,
            seed_model=self._seed(reform),
            spec=self.trainer.spec,
            task_name=self.trainer.task_name,
        )
        if host is None or host.credentials is None:
            return
        self.hosted, creds = host, host.credentials
        logger.info("founded group %s (%s)", creds.group_id, decision.reason)
        group = safe(lambda: self.registry.get_group(creds.group_id))
        if group is None:
            return
        if self.membership is None:
            self.join(group, reason="founder", invite=creds.invite_code)
        else:
            self.migrate(group, dataclasses.replace(decision, group_id=creds.group_id))

    def _seed(self, reform: bool) -> bytes:
        """A group re-formed after its group failed starts from that group's last model;
        a new group starts from this node's warmed-up local model."""
        from mycelium.learning.codec import weights_to_bytes

        arrays = self.trainer.last_group_arrays if reform else None
        return weights_to_bytes(arrays if arrays is not None else self.trainer.local_arrays())

    def resync(self, actual_group_id: int | None) -> None:
        """The registry holds a different group for us: follow the registry."""
        logger.warning("registry says group %s, resynchronising", actual_group_id)
        self.stop_supernode()
        if actual_group_id is not None:
            group = safe(lambda: self.registry.get_group(actual_group_id))
            root = self._trusted_root(group) if group is not None else False
            if group is not None and root is not False:
                key = self._membership_key(actual_group_id, root)
                if key is not None:
                    safe(lambda: self.registry.set_public_key(self.node_id, key.public_key))
                self.attach(group, root, key)

    def tend_hosted(self) -> None:
        """Keep hosting while the group has live members; stop when it is empty."""
        gid = self.hosted.group_id if self.hosted else None
        if self.hosted is None or gid is None:
            return
        group = safe(lambda: self.registry.get_group(gid))
        if group is None:
            return
        mine = self.membership is not None and self.membership.group_id == gid
        if not mine and group.num_members == 0:
            logger.info("hosted group %s has no live member: stopping it", gid)
            self.hosted.stop()
            self.hosted = None

    def current_group_failed(self) -> bool:
        m = self.membership
        if m is None or superlink_reachable(m.fleet_address):
            return False
        logger.warning("SuperLink of group %s unreachable", m.group_id)
        return True

    def check_supernode(self) -> None:
        """Restart a SuperNode that died on its own (not a migration)."""
        m = self.membership
        if m is None or m.supernode.is_running():
            return
        logger.warning("SuperNode for group %s exited; restarting it", m.group_id)
        # Flower only deactivates an authenticated node on exit: its key still holds.
        supernode = self._supernode(m.fleet_address, m.root_certificates, m.key)
        self.membership = dataclasses.replace(m, supernode=supernode)
        self.report()

    def attach(self, group: GroupPublic, root: Path | None, key: NodeKeyPair | None = None) -> None:
        """Start the SuperNode for ``group``; with a key, once the host admitted it."""
        address, gid = group.fleet_address, group.group_id
        if key is not None:
            wait_admitted(self.registry, self.node_id, group_id=gid, public_key=key.public_key)
        supernode = self._supernode(address, root, key)
        self.membership = Membership(gid, address, supernode, root, key)
        self.report()

    def _membership_key(self, group_id: int, root: Path | None) -> NodeKeyPair | None:
        """A fresh key for a membership of a TLS group (None on loopback: no admission)."""
        return self.keys.fresh(group_id) if root is not None else None

    def check_refused(self) -> None:
        """Leave the group whose run shipped another app than ours; record why."""
        refused = self.pin.take_refused()
        m = self.membership
        if not refused or m is None:
            return
        reason = refused[0].reason
        self.refused_groups[m.group_id] = reason
        logger.warning("leaving group %s: its host %s", m.group_id, reason)
        record = {"group_id": m.group_id, "run_id": refused[0].run_id, "reason": reason}
        with (self.cfg.work_dir / REFUSED_LOG).open("a") as f:
            f.write(json.dumps({"at": time.time(), **record}) + "\n")
        node_id = self.node_id
        safe(lambda: self.registry.leave_group(m.group_id, node_id))
        self.stop_supernode()

    def _trusted_root(self, group: GroupPublic) -> Path | None | Literal[False]:
        """The root certificate to connect to ``group`` with (None: plaintext on loopback),
        or False (logged) when the trust rule refuses the group: it is not joined."""
        from mycelium.net.trust import Untrusted

        try:
            return self.trust.root_certificates(group)
        except Untrusted as exc:
            logger.warning("not joining: %s", exc)
            return False

    def _supernode(
        self, fleet_address: str, root: Path | None, key: NodeKeyPair | None = None
    ) -> SuperNode:
        """A SuperNode pinned to our app; in a TLS group authenticated with ``key``."""
        return start_supernode(
            fleet_address,
            trainer_url=self.trainer_url,
            work_dir=self.cfg.work_dir / "supernode",
            name=self.cfg.name,
            root_certificates=root,
            key=key,
            pin=self.pin.executor,
        )

    def stop_supernode(self) -> None:
        if self.membership is not None:
            self.membership.supernode.stop()
            self.membership = None

    def stop_all(self, *, registry_reachable: bool) -> None:
        """Stop the SuperNode and the hosted group (closed in the registry if reachable)."""
        try:
            self.stop_supernode()
        finally:
            if self.hosted is not None:
                self.hosted.stop(close_in_registry=registry_reachable)
                self.hosted = None
