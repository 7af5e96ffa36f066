"""Node key pairs: Flower's own loaders accept what we write; bad keys are one-line errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mycelium import node_keys
from mycelium.node_keys import NodeKeyError


def test_generated_pair_is_what_flower_loads(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    pair = node_keys.generate(tmp_path / "keys" / "node.key")
    assert stat.S_IMODE(pair.private_key_path.stat().st_mode) == 0o600
    # `flwr supernode register KEY.pub` reads the .pub file ...
    registered = try_load_public_key(pair.private_key_path.with_name("node.key.pub"))
    # ... and `flower-supernode --auth-supernode-private-key` the private key.
    private = serialization.load_ssh_private_key(pair.private_key_path.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert public_key_to_bytes(private.public_key()) == registered
    assert node_keys.control_api_bytes(pair.public_key) == registered
    assert pair.public_key.startswith("ecdsa-sha2-nistp384 ")


def test_load_reads_back_the_same_public_key(tmp_path: Path) -> None:
    pair = node_keys.generate(tmp_path / "node.key")
    assert node_keys.load(pair.private_key_path) == pair


def test_each_generate_makes_a_new_key(tmp_path: Path) -> None:
    first = node_keys.generate(tmp_path / "a.key").public_key
    assert node_keys.generate(tmp_path / "b.key").public_key != first


def test_normalize_drops_comments_and_whitespace(tmp_path: Path) -> None:
    pair = node_keys.generate(tmp_path / "node.key")
    assert node_keys.normalize_public_key(f"  {pair.public_key} node@host\n") == pair.public_key
    fp = node_keys.fingerprint(pair.public_key + " comment")
    assert fp == pair.fingerprint and fp.startswith("SHA256:") and len(fp) == 50


def _openssh(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        "ecdsa-sha2-nistp384 AAAA",
        "x" * 2000,
        _openssh(ed25519.Ed25519PrivateKey.generate()),
        _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ],
    ids=["empty", "garbage", "truncated", "too-long", "ed25519", "rsa"],
)
def test_unusable_public_keys_are_refused(text: str) -> None:
    with pytest.raises(NodeKeyError) as err:
        node_keys.parse_public_key(text)
    assert "\n" not in str(err.value)


def test_unreadable_private_key_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "node.key"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-looking-bytes\n")
    with pytest.raises(NodeKeyError) as err:
        node_keys.load(bad)
    assert "secret-looking-bytes" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(NodeKeyError, match="cannot read"):
        node_keys.load(tmp_path / "missing.key")
