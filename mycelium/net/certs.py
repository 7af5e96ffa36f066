"""Certificates without a manual PKI per group, made with ``cryptography``.

- A **network CA** and a **server certificate** for the registry's names
  (``mycelium certs --out DIR --host NAME_OR_IP``): the registry serves with it, clients
  trust ``ca.pem`` (``--registry-ca``).
- A **group certificate**: a node founding a group makes a key and a self-signed
  certificate for its public host; the registry publishes the PEM with the group, so the
  registry is the trust anchor (like DNS with DANE records).
- :func:`check_presented`: does a listener present exactly the certificate the registry
  published? Members ask before they join.

Keys are ECDSA P-256; key files are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mycelium.net.addresses import split_host_port, strip_brackets

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
GROUP_CERT_FILE = "group.pem"
GROUP_KEY_FILE = "group.key"
CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825
GROUP_VALID_DAYS = 365
# Clock skew between hosts: certificates are valid from a little before "now".
BACKDATE = dt.timedelta(minutes=5)

Clock = Callable[[], dt.datetime]
PrivateKey = ec.EllipticCurvePrivateKey


class CertificateError(ValueError):
    """Unreadable, unusable or unexpected certificate material (message is one line)."""


class CertificateMismatch(CertificateError):
    """A listener presented another certificate than the one the registry published."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, in memory."""

    certificate: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a listener's TLS material: its certificate, key and the CA that signs it
    (for a self-signed group certificate the CA is the certificate itself)."""

    certfile: Path
    keyfile: Path
    ca_certfile: Path


# -- building ---------------------------------------------------------------------------


def subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """One SAN per host: an IP address entry for IP literals, a DNS name otherwise."""
    if not hosts:
        raise CertificateError("a certificate needs at least one --host name or address")
    names: list[x509.GeneralName] = []
    for raw in hosts:
        host = strip_brackets(raw.strip())
        if not host:
            raise CertificateError("empty --host")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host.lower()))
    return list(dict.fromkeys(names))  # drop repeats, keep order


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mycelium Net"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def _server_extensions(
    builder: x509.CertificateBuilder, hosts: Sequence[str]
) -> x509.CertificateBuilder:
    return builder.add_extension(
        x509.SubjectAlternativeName(subject_alternative_names(hosts)), False
    ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    common_name: str = "Mycelium Net network CA",
    *,
    days: int = CA_VALID_DAYS,
    clock: Clock = _utcnow,
) -> Issued:
    """A new network CA (self-signed, may sign server certificates only: path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key, days, clock())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(_key_usage(cert_sign=True), True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_server_certificate(
    ca: Issued, hosts: Sequence[str], *, days: int = SERVER_VALID_DAYS, clock: Clock = _utcnow
) -> Issued:
    """A server certificate for ``hosts`` (SANs), signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(hosts[0] if hosts else "-")
    builder = _builder(subject, ca.certificate.subject, key, days, clock())
    cert = (
        _server_extensions(builder, hosts)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_key_usage(cert_sign=False), True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_self_signed(
    hosts: Sequence[str],
    *,
    common_name: str | None = None,
    days: int = GROUP_VALID_DAYS,
    clock: Clock = _utcnow,
) -> Issued:
    """A self-signed server certificate for ``hosts``: a group's own certificate.

    It is its own trust anchor (members get it from the registry and pass it to Flower as
    ``--root-certificates``), so it is marked as a CA that can sign nothing below it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name or (hosts[0] if hosts else "-"))
    builder = _builder(name, name, key, days, clock())
    cert = (
        _server_extensions(builder, hosts)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(_key_usage(cert_sign=True), True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


# -- files --------------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (created 0600, then replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def load_certificate(pem: bytes | str, *, what: str = "certificate") -> x509.Certificate:
    """Parse one PEM certificate or raise a one-line :class:`CertificateError`."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data)
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"{what} is not a PEM certificate") from None


def _load_ca(out: Path) -> Issued:
    cert = load_certificate((out / CA_FILE).read_bytes(), what=str(out / CA_FILE))
    try:
        key = serialization.load_pem_private_key((out / CA_KEY_FILE).read_bytes(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertificateError(f"{out / CA_KEY_FILE} is not an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or (
        key.public_key().public_numbers() != cert.public_key().public_numbers()  # type: ignore[union-attr]
    ):
        raise CertificateError(f"{out / CA_KEY_FILE} is not the key of {out / CA_FILE}")
    return Issued(cert, key)


@dataclass(frozen=True)
class NetworkCerts:
    """What ``certs --out DIR`` wrote (or reused)."""

    ca: Path
    server_cert: Path
    server_key: Path
    ca_created: bool


def write_network_certs(out: Path, hosts: Sequence[str], *, clock: Clock = _utcnow) -> NetworkCerts:
    """Make (or reuse) ``out/ca.pem`` + ``ca.key`` and issue ``server.pem``/``server.key``
    for ``hosts``. An existing CA is reused so that one CA can sign several servers."""
    out = Path(out).resolve()
    subject_alternative_names(hosts)  # fail before writing anything
    created = not (out / CA_FILE).exists()
    if created:
        if (out / CA_KEY_FILE).exists():
            raise CertificateError(f"{out / CA_KEY_FILE} exists without {out / CA_FILE}")
        ca = make_ca(clock=clock)
        write_private(out / CA_KEY_FILE, ca.key_pem)
        _write_public(out / CA_FILE, ca.cert_pem)
    elif not (out / CA_KEY_FILE).exists():
        raise CertificateError(f"{out / CA_FILE} exists but {out / CA_KEY_FILE} does not")
    else:
        ca = _load_ca(out)
    server = make_server_certificate(ca, hosts, clock=clock)
    write_private(out / SERVER_KEY_FILE, server.key_pem)
    _write_public(out / SERVER_CERT_FILE, server.cert_pem)
    return NetworkCerts(out / CA_FILE, out / SERVER_CERT_FILE, out / SERVER_KEY_FILE, created)


def write_group_certificate(directory: Path, hosts: Sequence[str], **kwargs: object) -> TlsFiles:
    """Make a group's key and self-signed certificate in ``directory``; the certificate is
    also the CA file the group's own SuperLink tools (superexec, ``flwr``) verify with."""
    issued = make_self_signed(hosts, **kwargs)  # type: ignore[arg-type]
    directory = Path(directory).resolve()
    write_private(directory / GROUP_KEY_FILE, issued.key_pem)
    _write_public(directory / GROUP_CERT_FILE, issued.cert_pem)
    cert = directory / GROUP_CERT_FILE
    return TlsFiles(certfile=cert, keyfile=directory / GROUP_KEY_FILE, ca_certfile=cert)


# -- checking a peer ----------------------------------------------------------------------


def fingerprint(pem_or_der: bytes | str) -> str:
    """SHA-256 of a certificate's DER, hex (what logs and errors show)."""
    data = pem_or_der.encode() if isinstance(pem_or_der, str) else pem_or_der
    if data.lstrip().startswith(b"-----BEGIN"):
        data = load_certificate(data).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(data).hexdigest()


def presented_certificate(address: str, *, timeout: float) -> bytes:
    """The DER certificate the TLS listener at ``HOST:PORT`` presents (chain unchecked:
    the caller compares it with what it expects). CertificateError when no TLS answers."""
    host, port = split_host_port(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    server_name = None if _is_ip(host) else host
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"no TLS answer from {address}: {exc}") from None
    if not der:
        raise CertificateError(f"{address} presented no certificate")
    return der


def check_presented(address: str, expected_pem: bytes | str, *, timeout: float = 5.0) -> str:
    """Raise :class:`CertificateMismatch` unless the listener at ``address`` presents
    ``expected_pem``; return its fingerprint. (Key possession and the host name are then
    checked by the TLS client that trusts exactly this certificate, e.g. the SuperNode.)"""
    expected = fingerprint(expected_pem)
    actual = fingerprint(presented_certificate(address, timeout=timeout))
    if actual != expected:
        raise CertificateMismatch(
            f"{address} presents certificate sha256 {actual[:16]}..., the registry published "
            f"{expected[:16]}..."
        )
    return actual


def certificate_names(pem: bytes | str) -> list[str]:
    """The DNS names and IP addresses in a certificate's SAN (empty when it has none)."""
    cert = load_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*san.get_values_for_type(x509.DNSName), *ips]


def covers(pem: bytes | str, host: str) -> bool:
    """True when the certificate's SANs name ``host`` (exact match, no wildcards)."""
    bare = strip_brackets(host).lower()
    if _is_ip(bare):
        return str(ipaddress.ip_address(bare)) in certificate_names(pem)
    return bare in (n.lower() for n in certificate_names(pem))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return False
    return True


def check_server_material(certfile: Path, keyfile: Path, *, names: Sequence[str]) -> None:
    """Refuse, in one line, a certificate/key pair a server cannot use or whose
    certificate does not name every host in ``names`` (clients would reject it)."""
    for path in (certfile, keyfile):
        if not Path(path).is_file():
            raise CertificateError(f"{path} is not a file")
    pem = Path(certfile).read_bytes()
    load_certificate(pem, what=str(certfile))
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except ssl.SSLError:
        raise CertificateError(f"{keyfile} is not the private key of {certfile}") from None
    missing = [n for n in names if not covers(pem, n)]
    if missing:
        raise CertificateError(
            f"{certfile} does not name {', '.join(missing)} (it names: "
            f"{', '.join(certificate_names(pem)) or 'none'}); make one with "
            "`certs --out DIR --host NAME`"
        )
