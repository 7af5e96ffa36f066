"""The Typer entrypoint: help, and one-line errors with a non-zero exit for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mycelium.procs import free_port
from mycelium_net import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_no_args_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "registry" in result.output and "node" in result.output and "demo" in result.output


@pytest.mark.parametrize("command", ["registry", "node", "demo", "bench"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; sys.argv=['mycelium_net.py','--help'];"
        "import mycelium_net\n"
        "try:\n    mycelium_net.app()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','flwr','fastapi','sklearn') if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_unreadable_data_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_text("not an npz")
    result = runner.invoke(
        app, ["node", "--data", str(bad), "--registry-url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert "error:" in result.output and "bad.npz" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["node", "--partition", "7/3"], "0 <= i < N"),
        (["node", "--partition", "x"], "expected i/N"),
        (["node", "--cluster", "5", "--clusters", "3"], "--cluster must be in"),
        (["node", "--join-policy", "closed"], "--join-policy"),
        (["node", "--data", "/nonexistent.npz"], "is not a file"),
        (["demo", "--scenario", "spiral"], "--scenario"),
        (["demo", "--clusters", "5"], "4 distinct clusters"),
        (["node", "--clusters", "5", "--registry-url", "http://127.0.0.1:9"], "4 distinct"),
        (["node", "--scenario", "spiral", "--registry-url", "http://127.0.0.1:9"], "scenario"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unsupported_or_unreachable_database_is_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["registry", "--db", "mysql://me@db.example:3306/net"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "scheme 'mysql' is not supported" in lines[0] and "postgresql://" in lines[0]
    url = f"postgresql://me@127.0.0.1:{free_port()}/net"  # nothing listens there
    result = runner.invoke(app, ["registry", "--db", url])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "is unreachable" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no folder named "mysql:" or "postgresql:"


def test_database_path_takes_a_path_or_an_sqlite_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mycelium.registry.store import StoreUnusable, database_path

    monkeypatch.chdir(tmp_path)
    assert database_path("r.db") == tmp_path / "r.db"
    assert database_path("sqlite:///r.db") == tmp_path / "r.db"
    assert database_path(f"sqlite:///{tmp_path}/a/r.db") == tmp_path / "a" / "r.db"
    for bad in ("sqlite:///", "mysql://x/y", ""):
        with pytest.raises(StoreUnusable):
            database_path(bad)
