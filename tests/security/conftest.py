"""Real Flower processes for the security tests: a TLS SuperLink (optionally with
``--enable-supernode-auth``) and SuperNodes, each on a free port, stopped in ``finally``.

The test certificates (a CA and a server certificate for 127.0.0.1 and localhost) are made
here with ``cryptography``; once the across-machines work lands, ``mycelium.net.certs``
makes them instead.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mycelium.flower.procs import flower_env, flower_executable
from mycelium.flower.protocol import SuperNodeConfig, format_config
from mycelium.procs import ManagedProcess, free_port, port_is_open, wait_for

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "flower_app"
NODE_ID = re.compile(r"SuperNode ID: (\d+)")


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def _cert(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=2))
    )


def make_certs(out: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certs:
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        _cert("test CA", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        _cert(hosts[0], ca_name, key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = Certs(out / "ca.pem", out / "server.pem", out / "server.key")
    paths.ca.write_bytes(ca.public_bytes(pem))
    paths.cert.write_bytes(cert.public_bytes(pem))
    paths.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


class Lab:
    """One SuperLink and the SuperNodes a test starts against it."""

    def __init__(self, work: Path, certs: Certs, stack: ExitStack) -> None:
        self.work, self.certs, self._stack = work, certs, stack
        self.home = work / "superlink.flwr"
        self.port = 0
        self.superlink: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_superlink(self, *, auth: bool = True) -> Lab:
        self.port = free_port()
        c = self.certs
        args = [
            flower_executable("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation", "--ssl-ca-certfile", str(c.ca),
            "--ssl-certfile", str(c.cert), "--ssl-keyfile", str(c.key),
            *(["--enable-supernode-auth"] if auth else []),
        ]  # fmt: skip
        proc = ManagedProcess("superlink", args, log_path=self.work / "superlink.log",
                              env=flower_env(self.home), cwd=self.work)  # fmt: skip
        self.superlink = proc.start()
        self._stack.callback(proc.stop)
        wait_for(lambda: port_is_open(self.port), timeout=60, what="superlink")
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "g"\n\n[superlink.g]\naddress = "{self.address}"\n'
            f'root-certificates = "{c.ca}"\n'
        )
        return self

    def flwr(self, *args: str, timeout: float = 120) -> str:
        """Run the ``flwr`` CLI against this SuperLink's connection ``g``; its stdout."""
        proc = subprocess.run(
            [flower_executable("flwr"), *args], env=flower_env(self.home), cwd=self.work,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return proc.stdout

    def start_run(self, app: Path = APP_DIR, **config: str | int | float) -> int:
        out = self.flwr("run", str(app), "g", "--run-config", format_config(config),
                        "--format", "json")  # fmt: skip
        return int(json.loads(out[out.index("{") :])["run-id"])

    def run_log(self, run_id: int) -> str:
        return self.flwr("log", str(run_id), "g", "--show")

    def supernode(
        self,
        name: str,
        *,
        key: Path | None = None,
        address: str | None = None,
        isolation: str | None = None,
        node_config: SuperNodeConfig | None = None,
    ) -> SuperNodeProc:
        runtime_port = free_port()
        args = [
            flower_executable("flower-supernode"), "--superlink", address or self.address,
            "--root-certificates", str(self.certs.ca), "--port", str(runtime_port),
            "--max-wait-time", "20",
            *(["--auth-supernode-private-key", str(key)] if key else []),
            *(["--isolation", isolation] if isolation else []),
            *(["--node-config", format_config(node_config.to_node_config())]
              if node_config else []),
        ]  # fmt: skip
        proc = ManagedProcess(name, args, log_path=self.work / f"{name}.log",
                              env=flower_env(self.work / f"{name}.flwr"))  # fmt: skip
        proc.start()
        self._stack.callback(proc.stop)
        return SuperNodeProc(proc, runtime_port)


@dataclass
class SuperNodeProc:
    proc: ManagedProcess
    runtime_port: int

    @property
    def runtime_address(self) -> str:
        return f"127.0.0.1:{self.runtime_port}"

    def node_id(self) -> int | None:
        match = NODE_ID.search(self.proc.read_log())
        return int(match.group(1)) if match else None

    def wait_connected(self, timeout: float = 60) -> int:
        """The Flower node id; AssertionError at once if the SuperNode exits first."""

        def state() -> int | str | None:
            return self.node_id() if self.proc.is_running() else "exited"

        got = wait_for(state, timeout=timeout, what=f"{self.proc.name} connected")
        if got == "exited":
            raise AssertionError(f"{self.proc.name} exited: {self.proc.read_log()[-600:]}")
        return int(got)


@pytest.fixture
def lab(tmp_path: Path, certs: Certs) -> Iterator[Lab]:
    with ExitStack() as stack:
        yield Lab(tmp_path, certs, stack)
