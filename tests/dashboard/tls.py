"""The real registry app behind TLS, for tests: a self-signed certificate for 127.0.0.1 and
uvicorn started with it (the registry command has no TLS options yet)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from mycelium.procs import ManagedProcess, free_port, wait_for
from tests.conftest import OPERATOR_TOKEN, ROOT


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    alt = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(alt, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def trusting(cert: Path) -> ssl.SSLContext:
    """An SSL context that trusts ``cert`` (for httpx's ``verify=``)."""
    return ssl.create_default_context(cafile=str(cert))


def app_from_env():  # noqa: ANN201 - uvicorn --factory target
    """The registry app on the database named by MYCELIUM_TEST_DB, with the test suite's
    operator token (groups are created as the operator)."""
    import registry

    settings = registry.Settings(
        db_path=Path(os.environ["MYCELIUM_TEST_DB"]), operator_token=OPERATOR_TOKEN
    )
    return registry.create_app(settings)


@contextmanager
def serve_registry_tls(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(https_url, certificate)`` of the registry served by uvicorn with TLS."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--factory", "tests.dashboard.tls:app_from_env"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    args += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    env = {**os.environ, "MYCELIUM_TEST_DB": str(tmp_path / "tls.db")}
    proc = ManagedProcess("registry-tls", args, log_path=tmp_path / "tls.log", cwd=ROOT, env=env)
    url = f"https://127.0.0.1:{port}"
    try:
        proc.start()
        wait_for(
            lambda: not proc.is_running() or httpx.get(f"{url}/health", verify=trusting(cert)),
            timeout=30,
            what=f"registry at {url}",
        )
        if not proc.is_running():
            raise AssertionError(f"TLS registry exited:\n{proc.read_log()}")
        yield url, cert
    finally:
        proc.stop()
