"""Flower 1.42 over TLS across namespaces: a SuperLink in hostA with its group
certificate, SuperNodes in hostB trusting exactly that certificate (or another one)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mycelium.flower.procs import flower_env, flower_executable
from mycelium.lab.netns import Network
from mycelium.net.certs import fingerprint, write_group_certificate
from mycelium.net.tls import (
    flwr_connection_toml,
    make_group_tls,
    plan_group_exposure,
    superlink_tls_args,
    supernode_tls_args,
)
from mycelium.procs import ManagedProcess, wait_for

pytestmark = pytest.mark.slow


@contextmanager
def flower_child(
    network: Network, host: str, name: str, args: list[str], work: Path
) -> Iterator[ManagedProcess]:
    proc = ManagedProcess(
        name,
        network.command(host, [flower_executable(name.split(":")[0]), *args]),
        log_path=work / f"{name}.log",
        env=flower_env(work / f"{name}.flwr"),
        cwd=work,
    ).start()
    try:
        yield proc
    finally:
        proc.stop(timeout=10)


def supernode_args(network: Network, address: str, root: Path, *, max_wait: int) -> list[str]:
    port = network.free_port("hostB", "127.0.0.1")  # the SuperNode's local runtime API
    tls = supernode_tls_args(root)
    return ["--superlink", address, *tls, "--port", str(port), "--max-wait-time", str(max_wait)]


def test_supernode_joins_over_tls_and_refuses_another_certificate(
    network: Network, tmp_path: Path
) -> None:
    a = network["hostA"]
    exposure = plan_group_exposure(host=a.address, public_host=None, insecure=False)
    tls = make_group_tls(tmp_path / "group", exposure)
    assert tls is not None
    port = network.free_port("hostA")
    address = exposure.advertised(port)
    superlink_args = [
        *("--host", a.address, "--port", str(port)),
        *superlink_tls_args(tls),
        "--disable-runtime-dependency-installation",
    ]
    with flower_child(network, "hostA", "flower-superlink", superlink_args, tmp_path) as link:
        wait_for(
            lambda: link.is_running() and (a.address, port) in network.listening("hostA"),
            timeout=60,
            what="superlink listening",
        )
        # What another host sees on the fleet port: the group certificate, and TLS only.
        seen = network.probe("hostB", "cert", address)
        assert seen == {"sha256": fingerprint(tls.certfile.read_bytes())}
        plain = network.probe("hostB", "get", f"http://{address}/")
        assert "status" not in plain, plain

        # The host's own flwr CLI talks to its Control API over TLS.
        home = tmp_path / "cli.flwr"
        home.mkdir()
        (home / "config.toml").write_text(flwr_connection_toml("g", address, tls.certfile))
        listed = subprocess.run(
            network.command("hostA", [flower_executable("flwr"), "list", "g", "--format", "json"]),
            capture_output=True,
            text=True,
            env=flower_env(home),
            timeout=120,
        )
        assert listed.returncode == 0 and '"success": true' in listed.stdout, listed.stderr

        member_args = supernode_args(network, address, tls.certfile, max_wait=60)
        with flower_child(network, "hostB", "flower-supernode:ok", member_args, tmp_path) as ok:
            wait_for(lambda: "SuperNode ID" in ok.read_log(), timeout=60, what="member connects")

        impostor = write_group_certificate(tmp_path / "impostor", [a.address])
        bad_args = supernode_args(network, address, impostor.certfile, max_wait=8)
        with flower_child(network, "hostB", "flower-supernode:bad", bad_args, tmp_path) as bad:
            wait_for(lambda: not bad.is_running(), timeout=60, what="untrusting member gives up")
            log = bad.read_log()
        assert "SuperNode ID" not in log
        assert "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log, log[-2000:]
