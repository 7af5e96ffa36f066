"""The ``group`` command: hosts a real group until SIGINT, exits 0 with nothing left running;
one-line errors on bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mycelium.client import RegistryClient
from mycelium.procs import ManagedProcess, free_port, port_is_open, wait_for
from tests.conftest import operator_token_file, start_registry

ROOT = Path(__file__).resolve().parents[2]
ENTRY = [sys.executable, str(ROOT / "mycelium_net.py"), "group"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ENTRY + args, cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_group_command_registry_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = _run(["--registry-url", url, "--work-dir", str(tmp_path)])
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"error: registry at {url} is unreachable"]
    assert "Traceback" not in out.stdout + out.stderr


def test_group_command_bad_join_policy(tmp_path: Path) -> None:
    out = _run(["--join-policy", "closed", "--work-dir", str(tmp_path)])
    assert out.returncode == 1
    assert out.stderr.strip() == "error: --join-policy must be open or invite-only, not 'closed'"


@pytest.mark.slow
def test_group_command_hosts_until_sigint(tmp_path: Path) -> None:
    with start_registry(tmp_path) as (url, _), RegistryClient(url) as reader:
        args = ENTRY + [
            "--registry-url",
            url,
            "--name",
            "cli-group",
            "--work-dir",
            str(tmp_path / "g"),
            "--heartbeat-interval",
            "1",
            "--join-policy",
            "invite-only",
            "--operator-token-file",
            str(operator_token_file(tmp_path)),
        ]
        proc = ManagedProcess("group-cli", args, log_path=tmp_path / "group.log", cwd=ROOT)
        try:
            proc.start()
            group = wait_for(
                lambda: next(iter(reader.list_groups()), None),
                timeout=60,
                what="group registered",
            )
            assert group["name"] == "cli-group" and group["join_policy"] == "invite-only"
            port = int(group["fleet_address"].rsplit(":", 1)[1])
            assert port_is_open(port)
            wait_for(lambda: "hosted at" in proc.read_log(), timeout=60, what="run started")
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGINT)
            wait_for(lambda: proc.returncode() is not None, timeout=60, what="clean exit")
            assert proc.returncode() == 0, proc.read_log()
            assert not port_is_open(port), "the superlink outlived the group command"
            assert "Traceback" not in proc.read_log()
        finally:
            proc.stop()
