"""The gate of a TLS group host: its Fleet proxy on the public address and the admission of
exactly the registry's members on its loopback SuperLink (docs/security.md).

The group host starts its SuperLink (``--enable-supernode-auth``, 127.0.0.1), then
:meth:`GroupGate.start_proxy`, registers the group, then :meth:`GroupGate.start_admission`
with its group-token client; :meth:`GroupGate.stop` (before the SuperLink stops)
unregisters every admitted key and stops the proxy. Each key registered on the SuperLink
gets a receipt in the registry (the Flower node id), which the member waits for before it
starts its SuperNode.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mycelium.client import Conflict, RegistryClient, RegistryError
from mycelium.net.addresses import host_port
from mycelium.net.certs import TlsFiles
from mycelium.net.tls import SUPERLINK_HOST, SUPERLINK_NAME
from mycelium.security.admission import (
    DEFAULT_SYNC_INTERVAL,
    Admission,
    ControlApiAdmin,
    Member,
    Registration,
)
from mycelium.security.fleet_proxy import FleetProxy, FleetProxyConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateConfig:
    """Where the public Fleet proxy listens and where the loopback SuperLink is."""

    tls: TlsFiles
    listen_host: str
    listen_port: int
    superlink_port: int
    work_dir: Path
    interval: float = DEFAULT_SYNC_INTERVAL

    @property
    def superlink_address(self) -> str:
        return host_port(SUPERLINK_HOST, self.superlink_port)


class RegistryMembers:
    """The registry side of one group's admission (its host's group-token ``client``):
    :meth:`members` feeds :class:`Admission`, :meth:`publish` writes receipts."""

    def __init__(self, client: RegistryClient, group_id: int) -> None:
        self.client = client
        self.group_id = group_id
        self.admission: Admission | None = None  # set by the gate: its receipts to retry
        self._receipts: set[tuple[int, int]] = set()  # (node id, flower id) published

    def members(self) -> Sequence[Member] | None:
        """The registry's members with a key, or None when it cannot be read (then
        nothing changes). Receipts that could not be written before are retried here."""
        if self.admission is not None:
            self.publish(self.admission.registered)
        try:
            listed = self.client.group_members(self.group_id)
        except RegistryError as exc:
            logger.warning("group %s: member list unavailable: %s", self.group_id, exc)
            return None
        return [Member(m.node_id, m.public_key) for m in listed if m.public_key]

    def publish(self, registered: Mapping[int, Registration]) -> None:
        """Write the receipt of every registration not published yet."""
        for reg in registered.values():
            mark = (reg.node_id, reg.flower_node_id)
            if mark in self._receipts:
                continue
            try:
                self.client.admit(
                    self.group_id,
                    reg.node_id,
                    public_key=reg.public_key,
                    flower_node_id=reg.flower_node_id,
                )
            except Conflict as exc:  # it moved on meanwhile: the next sync unregisters it
                logger.info("node %s: no receipt (%s)", reg.node_id, exc)
            except RegistryError as exc:
                logger.warning("node %s: receipt not written yet: %s", reg.node_id, exc)
                continue
            self._receipts.add(mark)


class GroupGate:
    """See the module docstring; every method is idempotent and safe after a failure."""

    def __init__(self, cfg: GateConfig) -> None:
        self.cfg = cfg
        self.proxy = FleetProxy(
            FleetProxyConfig(
                listen_host=cfg.listen_host,
                listen_port=cfg.listen_port,
                upstream_port=cfg.superlink_port,
                certfile=cfg.tls.certfile,
                keyfile=cfg.tls.keyfile,
                upstream_ca=cfg.tls.ca_certfile,
                upstream_name=SUPERLINK_NAME,
            ),
            cfg.work_dir,
        )
        self.admission: Admission | None = None
        self._admin: ControlApiAdmin | None = None

    def start_proxy(self) -> None:
        """nginx on the public address (FleetProxyError, one line, if it cannot start)."""
        self.proxy.start()

    def start_admission(self, client: RegistryClient, group_id: int) -> None:
        """Admit the members ``client`` (the group token) lists; a first sync at once."""
        registry = RegistryMembers(client, group_id)
        self._admin = ControlApiAdmin(
            self.cfg.superlink_address, root_certificates=self.cfg.tls.ca_certfile
        )
        self.admission = Admission(
            self._admin, registry.members, interval=self.cfg.interval, on_change=registry.publish
        )
        registry.admission = self.admission
        self.admission.start()

    def is_running(self) -> bool:
        return self.proxy.is_running()

    def stop(self) -> None:
        """Stop admitting, unregister everyone admitted, stop the proxy."""
        try:
            if self.admission is not None:
                self.admission.stop()
                self.admission.unregister_all()
        finally:
            try:
                if self._admin is not None:
                    self._admin.close()
                    self._admin = None
            finally:
                self.proxy.stop()
