"""Small simulations with honest outcomes, determinism, and the CLI's handling of bad flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import learning_bench
from mycelium.learning import sim
from mycelium.learning.sim.policy import PolicyRun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def permute_k2() -> dict[str, sim.RunResult]:
    config = sim.SimConfig("permute", 2, 12, 12, 0, 12)
    return {r.algorithm: r for r in sim.simulate(config, ["global", "oracle", "mycelium"])}


def test_permute_global_stays_far_below_oracle(permute_k2: dict[str, sim.RunResult]) -> None:
    assert permute_k2["oracle"].accuracy > 0.9
    assert permute_k2["global"].accuracy < permute_k2["oracle"].accuracy - 0.25
    assert permute_k2["global"].purity == 0.5


def test_permute_mycelium_finds_the_clusters(permute_k2: dict[str, sim.RunResult]) -> None:
    result = permute_k2["mycelium"]
    assert result.accuracy >= permute_k2["oracle"].accuracy - 0.01
    assert (result.purity, result.groups) == (1.0, 2)
    assert result.rounds_to_90pct_oracle is not None


def test_same_flags_give_the_same_json(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.json", "b.json"):
        path = tmp_path / name
        learning_bench.run_cli(
            scenarios=["mixed"],
            clusters=2,
            clients=6,
            rounds=4,
            seed=1,
            max_capacity=None,
            algorithms=["ifca", "naive", "mycelium"],
            json_path=path,
            plot_path=None,
        )
        outputs.append(json.loads(path.read_text()))
    assert outputs[0]["results"] == outputs[1]["results"]
    assert outputs[0]["config"]["max_capacity"] == 6
    assert len(outputs[0]["results"]["mixed"]["mycelium"]["accuracy_per_round"]) == 4


def test_capacity_limits_group_size() -> None:
    # 6 rounds: warm-up ends at round 2 and a node whose open groups all score below its
    # local model searches two more rounds before it founds.
    config = sim.SimConfig("mixed", 1, 8, 6, 0, max_capacity=3)
    fed = sim.Federation(config)
    run = PolicyRun(fed, probe=True)
    run.run()
    assert max(len(m) for m in run.net.members.values()) <= 3
    assert sum(len(m) for m in run.net.members.values()) == 8


def test_purity_counts_majority_members() -> None:
    assert sim.purity([0, 0, 0, 1], [0, 0, 1, 1]) == 0.75
    assert sim.purity([0, 1], [None, None]) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenarios": ["spiral"]}, "unknown scenario 'spiral'"),
        ({"algorithms": ["fedprox"]}, "unknown algorithm 'fedprox'"),
        ({"rounds": 0}, "--rounds must be >= 1"),
        ({"max_capacity": 0}, "--max-capacity must be >= 1"),
        ({"json_path": Path("out.txt")}, "expected a .json file"),
    ],
)
def test_run_cli_rejects_bad_flags(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "scenarios": None,
        "clusters": 2,
        "clients": 4,
        "rounds": 1,
        "seed": 0,
        "max_capacity": None,
        "algorithms": None,
        "json_path": None,
        "plot_path": None,
    }
    with pytest.raises(ValueError, match=message):
        learning_bench.run_cli(**(args | kwargs))


def test_cli_prints_a_table_writes_a_plot_and_fails_cleanly(tmp_path: Path) -> None:
    plot = tmp_path / "curves.png"
    ok = subprocess.run(
        [sys.executable, "mycelium_net.py", "bench", "learning", "--scenario", "rotate",
         "--clusters", "2", "--clients", "4", "--rounds", "2", "--algorithms", "local",
         "--algorithms", "oracle", "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "| rotate | oracle |" in ok.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
    bad = subprocess.run(
        [sys.executable, "mycelium_net.py", "bench", "learning", "--scenario", "spiral"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: unknown scenario 'spiral'; choose from rotate, permute, mixed"
    ]
