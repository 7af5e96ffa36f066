"""CI runs the suite the way README.md tells users to: README's test command, verbatim,
inside a virtual environment that .ci/run creates fresh."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    """The command in the code block that follows "Run the tests" in README.md."""
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index("Run the tests") :]
    block = re.search(r"```bash\n(.+?)\n```", after, re.DOTALL)
    assert block is not None, "README.md has no test command"
    return block.group(1).strip()


def test_ci_runs_the_readmes_test_command_in_a_fresh_venv() -> None:
    command = readme_test_command()
    assert command == "pip install -r requirements-dev.txt && python -m pytest -q"
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines[-1] == command, "the last thing CI does is README's test command"
    steps = [lines.index(step) for step in ("rm -rf .venv", "python3 -m venv .venv")]
    activate = lines.index(". .venv/bin/activate")
    assert steps == sorted(steps) and steps[-1] < activate < len(lines) - 1
