"""mycelium.launch: the command lines of children, and the cause of a child's exit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mycelium import launch
from mycelium.procs import free_port


def test_registry_command_spells_every_option_once_with_an_absolute_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = launch.registry_command(port=8123, db=Path("r.db"), node_ttl=5.0, group_ttl=None)
    assert args[:3] == [sys.executable, str(launch.ENTRYPOINT), "registry"]
    assert args[args.index("--db") + 1] == str(tmp_path / "r.db")
    assert args[args.index("--port") + 1] == "8123"
    assert args[args.index("--node-ttl") + 1] == "5.0"
    assert "--group-ttl" not in args


def test_node_command_turns_keywords_into_flags() -> None:
    args = launch.node_command(name="a", work_dir=Path("/w/a"), join=None, keep=True, quiet=False)
    assert args[2:] == ["node", "--name", "a", "--work-dir", "/w/a", "--keep"]


@pytest.mark.parametrize(
    ("log", "line"),
    [
        ("09:11:31 INFO    mycelium_node: joined group 2\n\n", "joined group 2"),
        ("ok\nTraceback (most recent call last):\n  File \"x\", line 1\n    f()\nValueError: bad\n",
         "ValueError: bad"),
        ("error: flower-superlink not found\n", "error: flower-superlink not found"),
        ("", "(empty log)"),
    ],
)  # fmt: skip
def test_last_meaningful_line(log: str, line: str) -> None:
    assert launch.last_meaningful_line(log) == line


def test_a_registry_that_cannot_start_is_a_launch_error_naming_the_cause(tmp_path: Path) -> None:
    bad_db = tmp_path / "not-a-dir" / "r.db"
    (tmp_path / "not-a-dir").write_text("a file where a folder should be")
    with pytest.raises(launch.LaunchError, match="exited with 1 at start-up: error: "):
        launch.start_registry(db=bad_db, log_path=tmp_path / "registry.log", port=free_port())


def test_registry_process_answers_health_and_stops(tmp_path: Path) -> None:
    with launch.registry_process(db=tmp_path / "r.db", log_path=tmp_path / "r.log") as reg:
        assert launch.registry_is_healthy(reg.url)
        assert reg.process.is_running()
    assert not reg.process.is_running()
