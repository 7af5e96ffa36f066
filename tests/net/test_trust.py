"""A member's trust rule, against real TLS listeners on loopback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mycelium.net.certs import write_group_certificate
from mycelium.net.trust import GroupTrust, Untrusted
from tests.net.local_tls import tls_listener


@dataclass(frozen=True)
class Listed:
    """A group's listing as the rule reads it (mycelium.net.trust.ListedGroup)."""

    group_id: int
    fleet_address: str
    certificate: str | None


def group(address: str, certificate: str | None = None) -> Listed:
    return Listed(7, address, certificate)


def test_loopback_group_without_certificate_is_plaintext_on_a_local_network(
    tmp_path: Path,
) -> None:
    trust = GroupTrust(tmp_path, local_network=True)
    assert trust.root_certificates(group("127.0.0.1:9092")) is None


def test_loopback_advertised_on_a_shared_network_is_refused(tmp_path: Path) -> None:
    trust = GroupTrust(tmp_path, local_network=False)
    with pytest.raises(Untrusted, match="advertises loopback"):
        trust.root_certificates(group("127.0.0.1:9092"))
    assert not trust.check(group("localhost:9092"))


def test_remote_group_without_certificate_needs_insecure(tmp_path: Path) -> None:
    with pytest.raises(Untrusted, match="publishes no certificate"):
        GroupTrust(tmp_path, local_network=False).root_certificates(group("198.18.0.11:9092"))
    insecure = GroupTrust(tmp_path, local_network=False, insecure=True)
    assert insecure.root_certificates(group("198.18.0.11:9092")) is None


def test_published_certificate_presented_is_written_for_flower(tmp_path: Path) -> None:
    files = write_group_certificate(tmp_path / "g", ["127.0.0.1"])
    pem = files.certfile.read_text()
    with tls_listener(files.certfile, files.keyfile) as address:
        root = GroupTrust(tmp_path / "trust", local_network=True).root_certificates(
            group(address, pem)
        )
    assert root is not None and root.read_text() == pem and root.parent == tmp_path / "trust"


def test_a_superlink_presenting_another_certificate_is_not_joined(tmp_path: Path) -> None:
    published = write_group_certificate(tmp_path / "published", ["127.0.0.1"])
    impostor = write_group_certificate(tmp_path / "impostor", ["127.0.0.1"])
    trust = GroupTrust(tmp_path / "trust", local_network=True)
    with tls_listener(impostor.certfile, impostor.keyfile) as address:
        candidate = group(address, published.certfile.read_text())
        with pytest.raises(Untrusted, match="group 7: .* presents certificate sha256"):
            trust.root_certificates(candidate)
        assert not trust.check(candidate)
    assert not (tmp_path / "trust").exists()


def test_nothing_listening_is_untrusted(tmp_path: Path) -> None:
    pem = write_group_certificate(tmp_path / "g", ["127.0.0.1"]).certfile.read_text()
    trust = GroupTrust(tmp_path, local_network=True, timeout=1)
    with pytest.raises(Untrusted, match="no TLS answer"):
        trust.root_certificates(group("127.0.0.1:1", pem))
