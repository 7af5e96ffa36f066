"""The simulation with other tasks and strategies, and a user's own task from a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import learning_bench
from mycelium.cli import app
from mycelium.learning import sim
from mycelium.learning.strategy import StrategyConfig

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "my_task.py"
runner = CliRunner()


def test_mnist_simulation_learns_and_is_deterministic() -> None:
    config = sim.SimConfig("rotate", 2, 4, 3, 0, 4, task="mnist")
    first, second = (sim.simulate(config, ["oracle", "mycelium"]) for _ in range(2))
    assert [r.accuracy_per_round for r in first] == [r.accuracy_per_round for r in second]
    oracle = first[0]
    assert oracle.groups == 2 and oracle.accuracy > 0.3  # chance is 0.1


def test_fedprox_runs_next_to_fedavg_and_its_term_changes_training(tmp_path: Path) -> None:
    out = tmp_path / "prox.json"
    table = learning_bench.run_cli(
        scenarios=["mixed"],
        clusters=1,
        clients=6,
        rounds=3,
        seed=0,
        max_capacity=None,
        algorithms=["global"],
        json_path=out,
        plot_path=None,
        strategies=[StrategyConfig("fedprox", proximal_mu=1.5)],
    )
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"mixed fedavg", "mixed fedprox(proximal_mu=1.5)"}
    assert "mixed fedprox(proximal_mu=1.5) | global" in table
    avg = results["mixed fedavg"]["global"]["accuracy_per_round"]
    prox = results["mixed fedprox(proximal_mu=1.5)"]["global"]["accuracy_per_round"]
    assert avg != prox and prox[-1] > prox[0]  # the strong pull slows learning, but it learns


def test_fedadam_group_round_uses_flwrs_state_per_group() -> None:
    fed = sim.Federation(
        sim.SimConfig("permute", 2, 4, 2, 0, 4, strategy=StrategyConfig("fedadam"))
    )
    trace = sim.run_oracle(fed)
    assert len(trace.curve) == 2
    training = sim.GroupTraining(fed, salt=1)
    init = fed.initial(0)
    training.round({0: init, 1: init}, {0: [0, 2], 1: [1, 3]}, 0)
    assert sorted(training.aggregators) == [0, 1]
    assert all(a.server_round == 1 for a in training.aggregators.values())


def test_users_task_from_a_file_runs_in_the_bench() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "learning",
            "--task",
            f"{EXAMPLE}:TASK",
            "--scenario",
            "permute",
            "--clusters",
            "2",
            "--clients",
            "4",
            "--rounds",
            "3",
            "--algorithms",
            "oracle",
            "--algorithms",
            "global",
        ],
    )
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith("|")][2:]
    rows = {line.split("|")[2].strip(): line for line in table}
    oracle = float(rows["oracle"].split("|")[3])
    assert oracle > 0.6  # a linear model on digits, 3 rounds; global mixes two labelings
    assert float(rows["global"].split("|")[3]) < oracle


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "cifar"], "task 'cifar': expected a built-in name"),
        (["--task", "mnist", "--scenario", "spiral"], "unknown scenario 'spiral'"),
        (["--strategy", "fedsgd"], "unknown strategy 'fedsgd'"),
        (["--proximal-mu", "0.1"], "--proximal-mu applies to fedprox, none of which"),
    ],
)
def test_bad_task_or_strategy_flags_are_one_line_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["bench", "learning", "--rounds", "1", *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
