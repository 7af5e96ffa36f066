"""The type checker, part of the suite: mypy over the package and the Flower app, with the
configuration in pyproject.toml (strictness per package, and why, is written there).

The cache is the default ``.mypy_cache`` at the repository root (gitignored): a warm cache
turns the check from about 35 s into about 5 s, and a cache under a per-session tmp dir would
be cold on every run. mypy keeps one cache per configuration and version, so a stale cache
costs time, never a wrong answer.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["mycelium", "flower_app"]


def test_mypy_is_clean() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is pinned in requirements-dev.txt)")
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / ".mypy_cache"),
        *TARGETS,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"mypy found errors ({' '.join(command[1:])}, exit {result.returncode}):\n"
        f"{result.stdout}{result.stderr}"
    )
