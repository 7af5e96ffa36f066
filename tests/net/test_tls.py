"""TLS settings for Flower and the registry client (pure functions)."""

from __future__ import annotations

import ssl
import tomllib
from pathlib import Path

import pytest

from mycelium.net.addresses import AddressError
from mycelium.net.certs import CertificateError, certificate_names, write_network_certs
from mycelium.net.tls import (
    flwr_connection_toml,
    group_certificate_names,
    make_group_tls,
    plan_group_exposure,
    registry_verify,
    superlink_tls_args,
    supernode_tls_args,
)


def test_loopback_group_stays_insecure_exactly_as_before(tmp_path: Path) -> None:
    exposure = plan_group_exposure(host="127.0.0.1", public_host=None, insecure=False)
    assert not exposure.tls and exposure.local_only
    assert make_group_tls(tmp_path, exposure) is None
    assert superlink_tls_args(None) == ["--insecure"] == supernode_tls_args(None)
    assert list(tmp_path.iterdir()) == []


def test_group_off_loopback_gets_its_own_certificate(tmp_path: Path) -> None:
    exposure = plan_group_exposure(host="198.18.0.11", public_host=None, insecure=False)
    tls = make_group_tls(tmp_path, exposure)
    assert tls is not None and exposure.tls
    names = certificate_names(tls.certfile.read_bytes())
    assert sorted(names) == ["127.0.0.1", "198.18.0.11", "localhost"]
    args = superlink_tls_args(tls)
    assert args[args.index("--ssl-ca-certfile") + 1] == str(tls.certfile)
    assert args[args.index("--ssl-keyfile") + 1] == str(tls.keyfile)
    assert supernode_tls_args(tls.certfile) == ["--root-certificates", str(tls.certfile)]


def test_wildcard_group_certificate_names_public_host_and_loopback() -> None:
    exposure = plan_group_exposure(host="0.0.0.0", public_host="a.example", insecure=False)
    # The superexec dials 127.0.0.1 when the SuperLink binds 0.0.0.0 (flwr's
    # resolve_bind_address), so the certificate must name it too.
    assert group_certificate_names(exposure) == ["a.example", "127.0.0.1", "localhost"]


def test_insecure_group_is_explicit() -> None:
    exposure = plan_group_exposure(host="198.18.0.11", public_host=None, insecure=True)
    assert not exposure.tls
    with pytest.raises(AddressError, match="advertises loopback"):
        plan_group_exposure(host="198.18.0.11", public_host="127.0.0.1", insecure=False)


def test_flwr_connection_toml(tmp_path: Path) -> None:
    secure = tomllib.loads(flwr_connection_toml("group", "198.18.0.11:9092", tmp_path / "g.pem"))
    assert secure["superlink"]["default"] == "group"
    assert secure["superlink"]["group"] == {
        "address": "198.18.0.11:9092",
        "root-certificates": str(tmp_path / "g.pem"),
    }
    plain = tomllib.loads(flwr_connection_toml("group", "127.0.0.1:9092", None))
    assert plain["superlink"]["group"]["insecure"] is True


def test_registry_verify(tmp_path: Path) -> None:
    assert registry_verify(None) is True and registry_verify("") is True
    made = write_network_certs(tmp_path, ["reg.example"])
    assert isinstance(registry_verify(made.ca), ssl.SSLContext)
    with pytest.raises(CertificateError, match="No such file"):
        registry_verify(tmp_path / "missing.pem")
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        registry_verify(made.server_key)
