"""Node key pairs in Flower's SuperNode-auth format, made with ``cryptography``.

- private key: OpenSSH-encoded ECDSA (what ``flower-supernode --auth-supernode-private-key``
  loads with ``load_ssh_private_key``), written with mode 0600;
- public key: one OpenSSH line, ``ecdsa-sha2-nistp384 AAAA...`` (what ``flwr supernode
  register`` reads); this text is what a node gives the registry;
- :func:`control_api_bytes`: the PEM SubjectPublicKeyInfo the Control API's RegisterNode
  takes (Flower's ``public_key_to_bytes``).

Flower 1.42 never lets a SuperLink register a key again once it was unregistered there
(its LinkState keeps every key it has seen), so a node makes a **fresh key pair for each
membership** (join, migrate in) and rotates the key it gave the registry. No flwr import.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Flower accepts any NIST curve (``uses_nist_ec_curve``); its docs use P-384.
CURVE = ec.SECP384R1
NIST_CURVES = frozenset({"secp192r1", "secp224r1", "secp256r1", "secp384r1", "secp521r1"})
MAX_PUBLIC_KEY_CHARS = 1024  # an OpenSSH P-521 line is ~270 characters


class NodeKeyError(ValueError):
    """Unreadable or unsuitable key material (message is one line, never the key)."""


@dataclass(frozen=True)
class NodeKeyPair:
    """Paths of a node's key files and its public key line."""

    private_key_path: Path
    public_key: str  # OpenSSH line

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def generate(private_key_path: Path) -> NodeKeyPair:
    """Make a P-384 key pair; write the private key (0600) and ``<path>.pub``."""
    path = Path(private_key_path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public = _openssh_line(key.public_key())
    path.with_name(path.name + ".pub").write_text(public + "\n")
    return NodeKeyPair(private_key_path=path, public_key=public)


def load(private_key_path: Path) -> NodeKeyPair:
    """Read a private key written by :func:`generate` (or ``ssh-keygen -t ecdsa``)."""
    path = Path(private_key_path).absolute()
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except OSError as exc:
        raise NodeKeyError(f"cannot read node key {path}: {exc.strerror}") from None
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise NodeKeyError(f"{path} is not an unencrypted OpenSSH private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in NIST_CURVES:
        raise NodeKeyError(f"{path} is not an ECDSA key on a NIST curve")
    return NodeKeyPair(private_key_path=path, public_key=_openssh_line(key.public_key()))


def parse_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The EC public key of one OpenSSH line; :class:`NodeKeyError` for anything else."""
    if not isinstance(text, str) or len(text) > MAX_PUBLIC_KEY_CHARS:
        raise NodeKeyError("public key must be one OpenSSH line of at most 1024 characters")
    try:
        key = serialization.load_ssh_public_key(text.strip().encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeError):
        raise NodeKeyError("public key is not an OpenSSH public key line") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in NIST_CURVES:
        raise NodeKeyError("public key must be ECDSA on a NIST curve (e.g. nistp384)")
    return key


def normalize_public_key(text: str) -> str:
    """The canonical OpenSSH line of ``text`` (no comment): what the registry stores."""
    return _openssh_line(parse_public_key(text))


def control_api_bytes(text: str) -> bytes:
    """PEM SubjectPublicKeyInfo of an OpenSSH public key line (the Control API's format)."""
    return parse_public_key(text).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(text: str) -> str:
    """``SHA256:...`` of the key blob, as ``ssh-keygen -l`` prints it (safe for logs)."""
    blob = base64.b64decode(normalize_public_key(text).split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _openssh_line(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
