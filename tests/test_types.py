"""The type checker, part of the suite: mypy over the package and the Flower app, with the
configuration in pyproject.toml (strictness per package, and why, is written there).

The cache is the default ``.mypy_cache`` at the repository root (gitignored), as a developer's
own ``python -m mypy`` uses it: cold, the check takes about 30 s of one core and 1 GB; warm,
under a second (2026-12-06, the 2-core machine, quiet). A cache under a per-session tmp dir
would be cold on every run. mypy keys its cache by version and options, so a stale cache costs
time, never a wrong answer.
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
