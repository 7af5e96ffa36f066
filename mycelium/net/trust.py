"""A member's side of the trust chain: may this node connect its SuperNode to a group, and
with which root certificate?

The registry (reached over its TLS) publishes each group's certificate; a member connects
only to a SuperLink that presents exactly that certificate, and passes it to Flower as
``--root-certificates`` so the TLS handshake also proves the key and the host name. Groups
without a certificate are joined in plaintext only on loopback (the one-machine demo) or
with an explicit ``--insecure``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mycelium.net.addresses import AddressError, is_loopback, split_host_port
from mycelium.net.certs import CertificateError, check_presented

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class ListedGroup(Protocol):
    """What the rule reads of a group's listing (:class:`mycelium.api.GroupPublic` is one)."""

    @property
    def group_id(self) -> int: ...

    @property
    def fleet_address(self) -> str: ...

    @property
    def certificate(self) -> str | None: ...


class Untrusted(Exception):
    """This node must not connect to the group (message is one line, names the group)."""


@dataclass(frozen=True)
class GroupTrust:
    """The rule a member applies to every candidate group (see the module docstring)."""

    work_dir: Path  # where published certificates are written for Flower to read
    local_network: bool  # the registry is on loopback: the whole network is this machine
    insecure: bool = False
    timeout: float = 3.0

    def root_certificates(self, group: ListedGroup) -> Path | None:
        """The PEM file to give the SuperNode, or None for a plaintext (loopback) group.

        Raises :class:`Untrusted` when the group's address, certificate or what its
        SuperLink presents does not pass the rule; the SuperLink is contacted (one TLS
        handshake) when a certificate is published.
        """
        gid, address = group.group_id, group.fleet_address
        try:
            host, _ = split_host_port(address)
        except AddressError as exc:
            raise Untrusted(f"group {gid}: {exc}") from None
        if is_loopback(host) and not self.local_network:
            raise Untrusted(f"group {gid} advertises loopback {address} on a shared network")
        pem = group.certificate
        if not pem:
            if is_loopback(host) or self.insecure:
                return None
            raise Untrusted(
                f"group {gid} at {address} publishes no certificate; refusing plaintext "
                "(--insecure accepts it)"
            )
        try:
            check_presented(address, pem, timeout=self.timeout)
        except CertificateError as exc:
            raise Untrusted(f"group {gid}: {exc}") from None
        return self._write(gid, address, pem)

    def _write(self, gid: object, address: str, pem: str) -> Path:
        path = self.work_dir / f"group-{gid}-{_SAFE.sub('_', address)}.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != pem:
            path.write_text(pem)
        return path

    def check(self, group: ListedGroup) -> bool:
        """:meth:`root_certificates` as a yes/no for candidate filters (logs why not)."""
        try:
            self.root_certificates(group)
        except Untrusted as exc:
            logger.warning("not a candidate: %s", exc)
            return False
        return True
