"""Pure parts of the demo: the node plan, purity and the stability rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mycelium.api import EventPublic, GroupDetail, NodePublic, RoundPublic
from mycelium.demo.config import DemoConfig, plan_nodes
from mycelium.demo.observation import DemoFailed, DemoRun, is_stable, purity
from mycelium.demo.run import new_run_dir
from mycelium.procs import ManagedProcess, wait_for


def test_plan_round_robins_clusters_and_misplaces_the_last_node() -> None:
    specs = plan_nodes(DemoConfig(nodes=6, clusters=3))
    assert [s.cluster for s in specs] == [0, 1, 2, 0, 1, 2]
    assert [s.misplaced for s in specs] == [False] * 5 + [True]
    assert [s.index for s in specs] == list(range(6))


def test_no_misplacement_without_a_second_node_of_a_cluster() -> None:
    assert not any(s.misplaced for s in plan_nodes(DemoConfig(nodes=3, clusters=3)))
    assert not any(s.misplaced for s in plan_nodes(DemoConfig(nodes=4, clusters=1)))


def test_purity() -> None:
    clusters = {"a": 0, "b": 0, "c": 1}
    assert purity(["a", "b"], clusters) == 1.0
    assert purity(["a", "b", "c"], clusters) == 2 / 3
    assert purity([], clusters) is None


def node(name: str) -> NodePublic:
    return NodePublic(
        node_id=1, name=name, address=None, task="digits", num_samples=10, group_id=1,
        flower_node_id=None, accuracy=None, loss=None, round=None, last_seen=0.0,
        alive=True, created_at=0.0,
    )  # fmt: skip


def group(
    accs: list[float], start: float = 100.0, step: float = 7.0, members: int = 1
) -> GroupDetail:
    rounds = [
        RoundPublic(round=k + 1, accuracy=a, loss=0.5, num_nodes=members, num_examples=10,
                    reported_at=start + k * step)
        for k, a in enumerate(accs)
    ]  # fmt: skip
    return GroupDetail(
        group_id=1, name="g", fleet_address="127.0.0.1:9092", task="digits", max_capacity=4,
        join_policy="open", performance_threshold=0.0, status="active", alive=True,
        num_members=members, accuracy=None, verified_accuracy=None, verified_members=0,
        loss=None, round=len(accs) or None, has_model=True, model_sha256=None,
        fingerprint=None, strategy="fedavg", strategy_params={}, last_report=0.0,
        created_at=0.0, model_spec=None, members=[node("n0")] * members, rounds=rounds,
    )  # fmt: skip


def event(type_: str, at: float) -> EventPublic:
    return EventPublic.model_validate(
        {"id": 1, "type": type_, "at": at, "node_id": None, "group_id": None, "data": {}}
    )


JOINED = [event("joined", 90.0), event("node_registered", 500.0)]


def test_stable_after_a_quiet_window_with_enough_flat_rounds() -> None:
    flat = [0.80, 0.86, 0.83, 0.84, 0.86, 0.83]
    assert is_stable([group(flat)], JOINED, now=150.0, window=30.0)


def test_not_stable_too_soon_after_a_membership_change() -> None:
    flat = [0.80, 0.86, 0.83, 0.84, 0.86, 0.83]
    moved = [*JOINED, event("migrated", 130.0)]
    assert not is_stable([group(flat)], moved, now=150.0, window=30.0)
    assert not is_stable([group(flat)], [], now=150.0, window=30.0)


def test_not_stable_with_too_few_rounds_or_a_rising_group() -> None:
    assert not is_stable([group([0.8, 0.8, 0.8])], JOINED, now=150.0, window=30.0)
    rising = [0.70, 0.72, 0.74, 0.80, 0.82, 0.84]
    assert not is_stable([group(rising)], JOINED, now=150.0, window=30.0)
    empty_group = group([], members=0)
    flat = group([0.8] * 6)
    assert is_stable([flat, empty_group], JOINED, now=150.0, window=30.0)


def test_config_paths_are_absolute_where_they_enter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = DemoConfig(run_dir=Path("run"), report_path=Path("out/r.json"), plot_path=None)
    assert config.run_dir == tmp_path / "run"
    assert config.report_path == tmp_path / "out" / "r.json"
    default = new_run_dir(DemoConfig())
    assert default.is_absolute() and default.parent == tmp_path
    assert default.name.startswith("mycelium-demo-")


def test_a_child_that_exits_is_named_with_the_last_line_of_its_log(tmp_path: Path) -> None:
    code = "import sys; print('warming up'); print('error: data file is empty'); sys.exit(3)"
    proc = ManagedProcess("n7", [sys.executable, "-c", code], log_path=tmp_path / "n7.log")
    run = DemoRun(config=DemoConfig(run_dir=tmp_path), run_dir=tmp_path, processes=[proc])
    proc.start()
    wait_for(lambda: not proc.is_running(), timeout=30, what="the child to exit")
    with pytest.raises(DemoFailed) as failed:
        run.check_children()
    proc.stop()
    assert str(failed.value).startswith(
        "n7 exited unexpectedly (exit code 3); its last log line: error: data file is empty"
    )
    assert failed.value.failure["process"] == "n7"
    assert failed.value.failure["returncode"] == 3


def test_stopping_a_demo_leaves_the_callers_own_children_alone(tmp_path: Path) -> None:
    """A demo run inside another program (a test session with its database server, a
    bench) stops what it started and what its children left, never the caller's children:
    the full suite once lost its PostgreSQL server this way."""
    import os
    import subprocess

    from mycelium.demo.run import stop_all
    from mycelium.procs import descendant_pids

    callers = subprocess.Popen(["sleep", "120"])
    started = [callers]
    try:
        run = DemoRun(
            config=DemoConfig(run_dir=tmp_path),
            run_dir=tmp_path,
            foreign=frozenset(descendant_pids(os.getpid())),  # as run_demo takes it
        )
        left_behind = subprocess.Popen(["sleep", "120"])  # as an adopted orphan would be
        started.append(left_behind)
        stop_all(run, 5)
        assert left_behind.poll() is not None
        assert callers.poll() is None
    finally:
        for proc in started:
            proc.kill()
            proc.wait(timeout=10)


def test_summary_shows_local_group_and_personal_accuracy_per_node() -> None:
    from rich.console import Console

    from mycelium.demo.live import print_summary

    node = {"cluster": 0, "misplaced": False, "group_id": 1, "local_test_accuracy": 0.9}
    nodes = [
        {
            **node,
            "name": "a",
            "group_test_accuracy": 0.93,
            "personal_test_accuracy": 0.95,
            "uses_personal": True,
        },
        {
            **node,
            "name": "b",
            "group_test_accuracy": 0.94,
            "personal_test_accuracy": 0.94,
            "uses_personal": False,
        },
        {
            **node,
            "name": "c",
            "group_test_accuracy": None,
            "personal_test_accuracy": None,
            "uses_personal": None,
        },
        {
            **node,
            "name": "d",
            "group_test_accuracy": 0.85,
            "personal_test_accuracy": 0.9,
            "uses_personal": True,
            "predicts_with": "local",
        },
        {
            **node,
            "name": "e",
            "group_test_accuracy": 0.91,
            "personal_test_accuracy": 0.96,
            "uses_personal": True,
            "predicts_with": "group+personal+local",
        },
    ]
    report = {
        "groups": [],
        "nodes": nodes,
        "migrations": [],
        "timings": {"wall_s": 1.0, "peak_pss_mb": 1},
        "report_path": "r.json",
        "plot_path": "p.png",
    }
    console = Console(record=True, width=200)
    print_summary(console, report)
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if "│ " in line}
    assert "0.930" in rows["a"] and "0.950" in rows["a"] and "+0.050" in rows["a"]
    assert "0.940 (group)" in rows["b"] and "+0.040" in rows["b"]
    assert "0.900" in rows["c"] and "+" not in rows["c"]
    assert "0.900 (local)" in rows["d"] and "+0.000" in rows["d"]
    assert "0.960 (+local)" in rows["e"] and "+0.060" in rows["e"]


def test_the_live_view_groups_many_nodes_by_cluster_and_lists_a_few_by_name() -> None:
    from rich.console import Console

    from mycelium.demo.live import NODE_ROWS, render
    from mycelium.demo.observation import Snapshot

    def shown(n: int) -> str:
        config = DemoConfig(nodes=n, clusters=4, run_dir=Path("/tmp/unused"))
        run = DemoRun(config=config, run_dir=Path("/tmp/unused"), specs=plan_nodes(config))
        members = [node(f"n{i}") for i in range(n)]
        snap = Snapshot(at=1.0, groups=[group([0.9], members=n)], nodes=members, events=[])
        snap.groups[0].members[:] = members
        console = Console(width=120, record=True)
        console.print(render(run, snap))
        return console.export_text()

    few, many = shown(NODE_ROWS), shown(32)
    assert "n11(3)" in few and "nodes by latent cluster" not in few
    assert "32 nodes by latent cluster" in many and "n31" not in many
    assert "32: c0 x8, c1 x8, c2 x8, c3 x8" in many and "#1 x8" in many
    assert len(many.splitlines()) < len(few.splitlines()) + 10  # 32 nodes fit a terminal
