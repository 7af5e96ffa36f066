"""Certificates: names, trust, files, and telling the published certificate from another.

TLS handshakes here run on the main namespace's loopback only."""

from __future__ import annotations

import socket
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from mycelium.net.certs import (
    CertificateError,
    CertificateMismatch,
    certificate_names,
    check_presented,
    covers,
    fingerprint,
    load_certificate,
    presented_certificate,
    write_group_certificate,
    write_network_certs,
)
from tests.net.local_tls import tls_listener


def handshake(address: str, cafile: Path, server_hostname: str) -> str:
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return str(tls.version())


def test_network_ca_signs_a_server_certificate_for_its_names(tmp_path: Path) -> None:
    made = write_network_certs(tmp_path / "c", ["reg.example", "198.18.0.10", "127.0.0.1"])
    assert made.ca_created and made.ca == (tmp_path / "c" / "ca.pem").resolve()
    pem = made.server_cert.read_bytes()
    assert certificate_names(pem) == ["reg.example", "198.18.0.10", "127.0.0.1"]
    assert covers(pem, "REG.example") and covers(pem, "198.18.0.10") and not covers(pem, "x")
    ca = load_certificate(made.ca.read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    for key in (made.server_key, tmp_path / "c" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with tls_listener(made.server_cert, made.server_key) as address:
        assert handshake(address, made.ca, "127.0.0.1").startswith("TLS")
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(address, made.ca, "other.example")  # a name the certificate lacks


def test_second_run_reuses_the_ca(tmp_path: Path) -> None:
    first = write_network_certs(tmp_path, ["a.example"])
    ca_pem = first.ca.read_bytes()
    second = write_network_certs(tmp_path, ["b.example"])
    assert not second.ca_created and second.ca.read_bytes() == ca_pem
    assert certificate_names(second.server_cert.read_bytes()) == ["b.example"]
    with tls_listener(second.server_cert, second.server_key) as address:
        assert handshake(address, second.ca, "b.example").startswith("TLS")
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            handshake(address, second.ca, "a.example")


def test_broken_ca_material_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="at least one"):
        write_network_certs(tmp_path, [])
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(CertificateError, match="ca.key does not"):
        write_network_certs(tmp_path, ["a"])
    (tmp_path / "ca.key").write_text("x")
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        write_network_certs(tmp_path, ["a"])
    other = write_network_certs(tmp_path / "other", ["a"])
    (tmp_path / "ca.pem").write_bytes(other.ca.read_bytes())
    (tmp_path / "ca.key").write_bytes(other.server_key.read_bytes())
    with pytest.raises(CertificateError, match="is not the key of"):
        write_network_certs(tmp_path, ["a"])


def test_group_certificate_is_its_own_trust_anchor(tmp_path: Path) -> None:
    files = write_group_certificate(tmp_path, ["127.0.0.1", "198.18.0.11"])
    assert files.ca_certfile == files.certfile
    with tls_listener(files.certfile, files.keyfile) as address:
        assert handshake(address, files.certfile, "127.0.0.1").startswith("TLS")
        assert check_presented(address, files.certfile.read_bytes()) == fingerprint(
            files.certfile.read_text()
        )


def test_a_listener_with_another_certificate_is_detected(tmp_path: Path) -> None:
    published = write_group_certificate(tmp_path / "published", ["127.0.0.1"])
    impostor = write_group_certificate(tmp_path / "impostor", ["127.0.0.1"])
    with tls_listener(impostor.certfile, impostor.keyfile) as address:
        with pytest.raises(CertificateMismatch, match="presents certificate sha256") as info:
            check_presented(address, published.certfile.read_bytes())
        assert "\n" not in str(info.value)
        # A client trusting only the published certificate refuses the impostor too.
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(address, published.certfile, "127.0.0.1")


def test_no_tls_answer_is_a_certificate_error() -> None:
    plain = socket.create_server(("127.0.0.1", 0))
    port = plain.getsockname()[1]
    plain.close()  # nothing listens there now
    with pytest.raises(CertificateError, match="no TLS answer"):
        presented_certificate(f"127.0.0.1:{port}", timeout=1)
