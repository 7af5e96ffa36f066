"""The group's ServerApp launcher without a SuperLink: its command and its failures. The
launch itself (claim the task, exec flwr-serverapp) runs in every group test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mycelium.flower import serverapp_exec


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_serverapp_command_names_no_token(tmp_path: Path) -> None:
    args = serverapp_exec._parse(
        [
            "--runtime-api-address",
            "127.0.0.1:9",
            "--root-certificates",
            str(tmp_path / "ca"),
            "--secret-file",
            str(tmp_path / "s"),
            "--parent-pid",
            "7",
        ]
    )
    command = serverapp_exec.serverapp_command(args)
    assert Path(command[0]).name == "flwr-serverapp"
    assert command[command.index("--root-certificates") + 1] == str(tmp_path / "ca")
    assert command[command.index("--parent-pid") + 1] == "7"
    assert not any("token" in part for part in command)  # the token goes by memfd


def test_without_its_secret_it_exits_2(tmp_path: Path) -> None:
    argv = [
        "--runtime-api-address",
        "127.0.0.1:9",
        "--insecure",
        "--secret-file",
        str(tmp_path / "missing"),
        "--parent-pid",
        "1",
    ]
    assert serverapp_exec.main(argv) == 2


def test_it_gives_up_when_the_superlink_is_gone(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"0" * 64)
    argv = [
        "--runtime-api-address",
        "127.0.0.1:9",
        "--insecure",
        "--secret-file",
        str(secret),
        "--parent-pid",
        str(_dead_pid()),
    ]
    assert serverapp_exec.main(argv) == 1
