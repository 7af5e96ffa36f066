"""The exposure rule: loopback is free, anything else needs TLS or an explicit --insecure."""

from __future__ import annotations

import pytest

from mycelium.net.addresses import (
    AddressError,
    check_registry_url,
    host_port,
    is_loopback,
    is_wildcard,
    plan_exposure,
    split_host_port,
)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.5.6.7", "::1", "[::1]", "localhost", "LocalHost.", "a.localhost"]
)
def test_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["198.18.0.10", "0.0.0.0", "::", "example.org", "10.0.0.1", ""])
def test_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_wildcards() -> None:
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and not is_wildcard("127.0.0.1")


def test_host_port_round_trip() -> None:
    assert host_port("198.18.0.1", 9092) == "198.18.0.1:9092"
    assert host_port("::1", 9092) == "[::1]:9092"
    assert split_host_port("[::1]:9092") == ("::1", 9092)
    assert split_host_port("reg.example:443") == ("reg.example", 443)
    for bad in ("nohost", ":80", "h:0", "h:70000", "h:x"):
        with pytest.raises(AddressError):
            split_host_port(bad)


def test_loopback_needs_no_tls_and_keeps_the_demo_as_it_is() -> None:
    exposure = plan_exposure(what="group", host="127.0.0.1", tls=False)
    assert exposure.local_only and exposure.public_host == "127.0.0.1"
    assert exposure.advertised(9092) == "127.0.0.1:9092"


def test_public_defaults_to_bind_host_and_tls_is_accepted() -> None:
    exposure = plan_exposure(what="group", host="198.18.0.11", tls=True)
    assert exposure.public_host == "198.18.0.11" and not exposure.local_only
    assert exposure.local_host == "198.18.0.11"


def test_wildcard_bind_needs_a_public_host_and_reaches_itself_on_loopback() -> None:
    with pytest.raises(AddressError, match="--public-host"):
        plan_exposure(what="registry", host="0.0.0.0", tls=True)
    exposure = plan_exposure(what="registry", host="0.0.0.0", public_host="reg.example", tls=True)
    assert exposure.advertised(443) == "reg.example:443"
    assert exposure.local_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "public", "needle"),
    [
        ("198.18.0.11", None, "without TLS"),
        ("0.0.0.0", "node.example", "without TLS"),
        ("127.0.0.1", "198.18.0.11", "binds loopback"),
        ("198.18.0.11", "127.0.0.1", "advertises loopback"),
        ("198.18.0.11", "0.0.0.0", "not an address"),
        ("", None, "empty"),
    ],
)
def test_refusals_are_one_line(host: str, public: str | None, needle: str) -> None:
    with pytest.raises(AddressError, match=needle) as info:
        plan_exposure(what="node", host=host, public_host=public, tls=False)
    assert "\n" not in str(info.value) and str(info.value).startswith("node: ")


def test_insecure_is_explicit_and_contradicts_tls() -> None:
    exposure = plan_exposure(what="group", host="198.18.0.11", tls=False, insecure=True)
    assert not exposure.tls
    with pytest.raises(AddressError, match="conflicts"):
        plan_exposure(what="group", host="198.18.0.11", tls=True, insecure=True)


def test_registry_url_rules() -> None:
    assert check_registry_url("http://localhost:8000/") == "http://localhost:8000"
    assert check_registry_url("https://198.18.0.10:8443", ca_file="ca.pem")
    assert check_registry_url("http://198.18.0.10:8000", insecure=True)
    with pytest.raises(AddressError, match="plain http to another host"):
        check_registry_url("http://198.18.0.10:8000")
    with pytest.raises(AddressError, match="is http://"):
        check_registry_url("http://127.0.0.1:8000", ca_file="ca.pem")
    with pytest.raises(AddressError, match="must be http"):
        check_registry_url("ftp://x")
