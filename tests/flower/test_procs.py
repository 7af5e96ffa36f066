"""Flower's processes: executables and environment (no process started here)."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from mycelium.flower.errors import FlowerNotInstalled
from mycelium.flower.group_host import GroupHost
from mycelium.flower.procs import flower_env, flower_executable


def test_flower_env_is_private_absolute_and_finds_flowers_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = flower_env(Path("rel/home"))
    assert env["FLWR_HOME"] == str(tmp_path / "rel" / "home")
    assert (tmp_path / "rel" / "home").is_dir()
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    # The SuperLink starts flower-superexec by name: the interpreter's scripts come first.
    first = env["PATH"].split(os.pathsep)[0]
    assert first in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent))
    assert env["PATH"].endswith("/usr/bin:/bin")
    assert "PYTHONPATH" not in env or str(Path(__file__).parents[2]) not in env["PYTHONPATH"]


def test_flower_executable_prefers_the_interpreters_scripts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    found = Path(flower_executable("flower-superlink"))
    assert found.is_absolute() and found.name == "flower-superlink"
    assert found.parent in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent)


def test_a_missing_executable_is_a_one_line_error() -> None:
    with pytest.raises(FlowerNotInstalled) as info:
        flower_executable("flower-does-not-exist")
    assert "\n" not in str(info.value) and "flower-does-not-exist not found" in str(info.value)


def test_a_missing_flower_app_folder_is_flower_not_installed(tmp_path: Path) -> None:
    host = GroupHost("http://127.0.0.1:9", name="g", work_dir=tmp_path, app_dir=tmp_path / "no")
    with pytest.raises(FlowerNotInstalled, match="Flower app folder"):
        host.start()
    host.stop()  # idempotent after the failed start
