"""The README's Python example: ``mycelium_node`` still offers NodeConfig and run_node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mycelium_node

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readmes_python_example_builds_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert "from mycelium_node import NodeConfig, run_node" in block
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(block.replace("run_node(config)", ""), namespace)  # everything but running it
    config = namespace["config"]
    assert isinstance(config, mycelium_node.NodeConfig)
    assert config.name == "alice" and config.partition_count == 8
    assert config.work_dir.is_absolute() and config.work_dir.is_relative_to(tmp_path)
    assert namespace["run_node"] is mycelium_node.run_node
