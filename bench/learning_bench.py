"""``bench learning``: the simulation of :mod:`mycelium.learning.sim` as a benchmark.

Validates the flags, runs every chosen algorithm on every chosen scenario, and prints one
markdown table; optionally writes the results as JSON (deterministic figures apart from
wall-clock ones) and an accuracy-per-round PNG.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from mycelium.learning.sim import ALGORITHMS, RunResult, SimConfig, simulate
from mycelium.learning.strategy import StrategyConfig
from mycelium.learning.tasks.loader import load_task

DEFAULT_ROUNDS = 30  # bench rounds of a task without its own ``bench_rounds``


def _validate(
    scenarios: list[str] | None,
    algorithms: list[str] | None,
    *,
    task_scenarios: Sequence[str],
    clusters: int,
    clients: int,
    rounds: int,
    seed: int,
    max_capacity: int | None,
) -> tuple[list[str], list[str]]:
    chosen_s = list(dict.fromkeys(scenarios or task_scenarios))
    chosen_a = list(dict.fromkeys(algorithms or ALGORITHMS))
    for name, chosen, allowed in (
        ("scenario", chosen_s, tuple(task_scenarios)),
        ("algorithm", chosen_a, ALGORITHMS),
    ):
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            raise ValueError(f"unknown {name} {unknown[0]!r}; choose from {', '.join(allowed)}")
    for flag, value in (("--clusters", clusters), ("--clients", clients), ("--rounds", rounds)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if max_capacity is not None and max_capacity < 1:
        raise ValueError(f"--max-capacity must be >= 1, got {max_capacity}")
    return chosen_s, chosen_a


def run_cli(
    *,
    scenarios: list[str] | None,
    clusters: int,
    clients: int,
    rounds: int | None,
    seed: int,
    max_capacity: int | None,
    algorithms: list[str] | None,
    json_path: Path | None,
    plot_path: Path | None,
    task: str = "digits",
    strategies: Sequence[StrategyConfig] = (),
) -> str:
    """Run the benchmark; write JSON / PNG if asked; return the markdown table.

    ``rounds`` None = the task's ``bench_rounds`` (30 without). ``strategies`` other than
    plain FedAvg run next to FedAvg; each scenario's results are then keyed
    ``"scenario strategy"`` (just ``"scenario"`` with FedAvg alone)."""
    task_obj = load_task(task)  # TaskLoadError (ValueError): one line
    if rounds is None:
        rounds = getattr(task_obj, "bench_rounds", DEFAULT_ROUNDS)
    chosen_s, chosen_a = _validate(
        scenarios,
        algorithms,
        task_scenarios=task_obj.scenarios,
        clusters=clusters,
        clients=clients,
        rounds=rounds,
        seed=seed,
        max_capacity=max_capacity,
    )
    for path, suffix in ((json_path, ".json"), (plot_path, ".png")):
        if path is not None and path.suffix.lower() != suffix:
            raise ValueError(f"{path}: expected a {suffix} file name")
    capacity = max_capacity or clients
    chosen_st = _with_fedavg(strategies)
    results = {}
    for s in chosen_s:
        for st in chosen_st:
            label = s if len(chosen_st) == 1 else f"{s} {st.describe()}"
            sim_config = SimConfig(
                s, clusters, clients, rounds, seed, capacity, task=task, strategy=st
            )
            results[label] = simulate(sim_config, chosen_a)
    config: dict[str, object] = {"clusters": clusters, "clients": clients, "rounds": rounds}
    config |= {"seed": seed, "max_capacity": capacity, "task": task}
    config["strategies"] = [st.describe() for st in chosen_st]
    if json_path is not None:
        _write(json_path, json.dumps(to_json(config, results), indent=2, sort_keys=True) + "\n")
    if plot_path is not None:
        plot(results, plot_path)
    return markdown(results)


def _with_fedavg(strategies: Sequence[StrategyConfig]) -> list[StrategyConfig]:
    """The requested strategies, FedAvg first (the baseline every other is compared with)."""
    chosen = list(dict.fromkeys(strategies))
    if not any(st.name == "fedavg" for st in chosen):
        chosen.insert(0, StrategyConfig())
    return chosen


def to_json(config: dict[str, object], results: dict[str, list[RunResult]]) -> dict[str, object]:
    """Deterministic results under ``results``; wall-clock figures apart under ``timing``."""
    body: dict[str, dict[str, object]] = {}
    timing: dict[str, dict[str, float]] = {}
    for scenario, runs in results.items():
        body[scenario], timing[scenario] = {}, {}
        for r in runs:
            values = asdict(r)
            timing[scenario][r.algorithm] = round(values.pop("seconds_per_round"), 4)
            values["accuracy_per_round"] = list(r.accuracy_per_round)
            body[scenario][values.pop("algorithm")] = values
    return {"config": config, "results": body, "timing_seconds_per_round": timing}


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from exc


def markdown(results: dict[str, list[RunResult]]) -> str:
    """One table: a row per scenario and algorithm."""
    lines = [
        "| scenario | algorithm | accuracy | rounds to 90% oracle | migrations | groups "
        "| purity | s/round |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario, runs in results.items():
        for r in runs:
            lines.append(
                f"| {scenario} | {r.algorithm} | {r.accuracy:.3f} "
                f"| {_dash(r.rounds_to_90pct_oracle)} | {r.migrations} | {r.groups} "
                f"| {_dash(r.purity, '.2f')} | {r.seconds_per_round:.3f} |"
            )
    return "\n".join(lines)


def _dash(value: float | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def plot(results: dict[str, list[RunResult]], path: Path) -> None:
    """Accuracy per round, one panel per scenario, one line per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (scenario, runs) in zip(axes[0], results.items(), strict=True):
        for r in runs:
            ax.plot(
                range(1, len(r.accuracy_per_round) + 1), r.accuracy_per_round, label=r.algorithm
            )
        ax.set_title(scenario)
        ax.set_xlabel("round")
        ax.set_ylabel("mean client test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
