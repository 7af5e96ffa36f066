"""The one-command demo, end to end, as a user runs it (a real process tree)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mycelium.procs import descendant_pids, free_port, wait_for
from tests.factories import ENTRYPOINT

pytestmark = pytest.mark.slow


class Tree:
    """Every descendant a process has had while we watched it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.seen: set[int] = set()

    def watch(self) -> None:
        self.seen.update(descendant_pids(self.proc.pid))

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.watch()
            time.sleep(0.5)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError(f"demo still running after {timeout}s")
        return self.proc.returncode

    def survivors(self) -> list[int]:
        alive = []
        for pid in self.seen:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        return alive


def start_demo(tmp_path: Path, *args: str) -> Tree:
    cmd = [
        sys.executable,
        str(ENTRYPOINT),
        "demo",
        "--port",
        str(free_port()),
        "--run-dir",
        str(tmp_path / "run"),
        *args,
    ]
    log = open(tmp_path / "demo.out", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Tree(proc)


def test_demo_forms_pure_groups_migrates_and_beats_local_training(tmp_path: Path) -> None:
    tree = start_demo(
        tmp_path,
        "--nodes",
        "4",
        "--clusters",
        "2",
        "--duration",
        "240",
        "--report",
        str(tmp_path / "report.json"),
        "--plot",
        str(tmp_path / "demo.png"),
    )
    code = tree.wait(timeout=420)
    output = (tmp_path / "demo.out").read_text()
    assert code == 0, output
    report = json.loads((tmp_path / "report.json").read_text())
    assert (tmp_path / "demo.png").stat().st_size > 10_000

    groups = [g for g in report["groups"] if g["members"]]
    assert len(groups) >= 2, output
    assert all(g["purity"] == 1.0 for g in groups), report["groups"]
    misplaced = next(n for n in report["nodes"] if n["misplaced"])
    assert report["migrations"], output
    assert any(m["expected_gain"] > 0 for m in report["migrations"])
    home = next(g for g in groups if misplaced["name"] in {m["name"] for m in g["members"]})
    assert {m["cluster"] for m in home["members"]} == {misplaced["cluster"]}
    for node in report["nodes"]:
        assert node["group_test_accuracy"] > node["local_test_accuracy"], node
    assert tree.seen, "the demo started no process"
    assert tree.survivors() == []


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    tree = start_demo(tmp_path, "--nodes", "2", "--clusters", "2", "--duration", "300")

    def flower_running() -> bool:
        tree.watch()
        assert tree.proc.poll() is None, (tmp_path / "demo.out").read_text()
        return any("flower-superlink" in _cmdline(pid) for pid in tree.seen)

    wait_for(flower_running, timeout=180, interval=0.5, what="a SuperLink under the demo")
    tree.proc.send_signal(signal.SIGINT)
    code = tree.wait(timeout=60)
    assert code != 0  # interrupted, said so on one line
    assert "interrupted" in (tmp_path / "demo.out").read_text()
    assert tree.survivors() == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
