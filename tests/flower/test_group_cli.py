"""The ``group`` command: hosts a real group with the strategy its flags give until SIGINT,
exits 0 with nothing left running; one-line errors on bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mycelium.client import RegistryClient
from mycelium.flower.procs import flower_env, flower_executable
from mycelium.flower.protocol import CONNECTION
from mycelium.learning.strategy import StrategyConfig
from mycelium.procs import ManagedProcess, free_port, port_is_open, wait_for
from tests.conftest import operator_token_file, start_registry

ROOT = Path(__file__).resolve().parents[2]
ENTRY = [sys.executable, str(ROOT / "mycelium_net.py"), "group"]
# Not the default strategy, and every parameter it takes unlike flwr's defaults (FedYogi:
# eta 0.01, beta_1 0.9, beta_2 0.99, tau 0.001); FedProx's mu: tests/flower/test_group_tasks.
YOGI = StrategyConfig("fedyogi", server_lr=0.03, beta_1=0.8, beta_2=0.95, tau=0.002)


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


def _serverapp_log(work: Path, run_id: str) -> str:
    """The run's ServerApp log (``flwr log``), read as the group's host reads it."""
    out = subprocess.run(
        [flower_executable("flwr"), "log", run_id, CONNECTION, "--show"],
        env=flower_env(work / "superlink.flwr"),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout


@pytest.mark.slow
def test_group_command_hosts_its_strategy_until_sigint(tmp_path: Path) -> None:
    flags = [f"--{param.replace('_', '-')}={value}" for param, value in YOGI.params.items()]
    assert len(flags) == 4  # every parameter FedYogi takes
    with start_registry(tmp_path) as (url, _), RegistryClient(url) as reader:
        args = ENTRY + [
            "--strategy",
            YOGI.name,
            *flags,
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
            assert group.name == "cli-group" and group.join_policy == "invite-only"
            port = int(group.fleet_address.rsplit(":", 1)[1])
            assert port_is_open(port)
            wait_for(lambda: "hosted at" in proc.read_log(), timeout=60, what="run started")
            assert (group.strategy, group.strategy_params) == (YOGI.name, YOGI.params)
            # What the ServerApp's flwr strategy holds, read back from its instance.
            run_id = proc.read_log().split("hosted at", 1)[1].split(", run ")[1].split()[0]
            line = wait_for(
                lambda: next(
                    (x for x in _serverapp_log(tmp_path / "g", run_id).splitlines()
                     if "strategy " in x),
                    None,
                ),
                timeout=60,
                what="the ServerApp's strategy line",
            )  # fmt: skip
            assert line.rstrip().endswith(f"strategy {YOGI.describe()}"), line
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGINT)
            wait_for(lambda: proc.returncode() is not None, timeout=60, what="clean exit")
            assert proc.returncode() == 0, proc.read_log()
            assert not port_is_open(port), "the superlink outlived the group command"
            assert "Traceback" not in proc.read_log()
        finally:
            proc.stop()
