"""``bench learning``: run the simulation for the chosen flags, print a table, write JSON / PNG.

The deterministic figures go under ``results`` of the JSON (the same flags give the same
``results``); wall-clock seconds per round, the run's wall time and peak memory apart.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mycelium import config
from mycelium.learning import sim
from mycelium.learning.data import check_label_skew
from mycelium.learning.sim.federation import Federation, SimConfig
from mycelium.learning.sim.personal import check_personal
from mycelium.learning.sim.timeline import Drift, Timeline, parse_drift
from mycelium.learning.strategy import StrategyConfig
from mycelium.learning.tasks.loader import load_task

DEFAULT_ROUNDS = 30  # bench rounds of a task without its own ``bench_rounds``


@dataclass(frozen=True)
class _Flags:
    """The validated flags of one benchmark run."""

    scenarios: list[str]
    algorithms: list[str]
    clusters: int
    clients: int
    rounds: int
    seed: int
    capacity: int
    arrivals: bool
    drift: Drift | None
    liars: int
    max_candidates: int
    task: str = "digits"
    strategies: tuple[StrategyConfig, ...] = (StrategyConfig(),)
    prior_shift: bool = True
    label_skew: float | None = None
    personal: str = config.PERSONAL
    local_fallback: bool = True

    def config(self, scenario: str, strategy: StrategyConfig) -> SimConfig:
        return SimConfig(
            scenario,
            self.clusters,
            self.clients,
            self.rounds,
            self.seed,
            self.capacity,
            arrivals=self.arrivals,
            drift=self.drift,
            liars=self.liars,
            max_candidates=self.max_candidates,
            task=self.task,
            strategy=strategy,
            prior_shift=self.prior_shift,
            label_skew=self.label_skew,
            personal=self.personal,
            local_fallback=self.local_fallback,
        )

    def runs(self) -> list[tuple[str, SimConfig]]:
        """(label, config) per scenario and strategy: the label is the scenario, followed
        by the strategy when more than FedAvg runs."""
        return [
            (s if len(self.strategies) == 1 else f"{s} {st.describe()}", self.config(s, st))
            for s in self.scenarios
            for st in self.strategies
        ]

    def as_json(self) -> dict[str, object]:
        values = asdict(self)
        values["max_capacity"] = values.pop("capacity")
        values["drift"] = None if self.drift is None else f"{self.drift.round}:{self.drift.share}"
        values["strategies"] = [st.describe() for st in self.strategies]
        for key in ("scenarios", "algorithms"):
            values.pop(key)
        return values


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
    arrivals: bool,
    drift: str | None,
    liars: int,
    max_candidates: int,
    task: str,
    strategies: Sequence[StrategyConfig],
    prior_shift: bool = True,
    label_skew: float | None = None,
    personal: str = config.PERSONAL,
    local_fallback: bool = True,
) -> _Flags:
    parsed = None if drift is None else parse_drift(drift)
    check_label_skew(label_skew)
    check_personal(personal)
    default = [s for s in task_scenarios if parsed is None or s != "mixed"]
    chosen_s = list(dict.fromkeys(scenarios or default))
    chosen_a = list(dict.fromkeys(algorithms or sim.ALGORITHMS))
    for name, chosen, allowed in (
        ("scenario", chosen_s, tuple(task_scenarios)),
        ("algorithm", chosen_a, sim.ALGORITHMS),
    ):
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            raise ValueError(f"unknown {name} {unknown[0]!r}; choose from {', '.join(allowed)}")
    for flag, value in (
        ("--clusters", clusters),
        ("--clients", clients),
        ("--rounds", rounds),
        ("--max-candidates", max_candidates),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if max_capacity is not None and max_capacity < 1:
        raise ValueError(f"--max-capacity must be >= 1, got {max_capacity}")
    if liars < 0:
        raise ValueError(f"--liars must be >= 0, got {liars}")
    if parsed is not None and parsed.round > rounds:
        raise ValueError(f"--drift round {parsed.round} is after the last round ({rounds})")
    if parsed is not None and "mixed" in chosen_s:
        raise ValueError("--drift needs latent clusters; the mixed scenario has none")
    capacity = max_capacity or clients
    return _Flags(
        chosen_s, chosen_a, clusters, clients, rounds, seed, capacity,
        arrivals, parsed, liars, max_candidates, task, _with_fedavg(strategies), prior_shift,
        label_skew, personal, local_fallback,
    )  # fmt: skip


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
    arrivals: bool = False,
    drift: str | None = None,
    liars: int = 0,
    max_candidates: int = 8,
    task: str = "digits",
    strategies: Sequence[StrategyConfig] = (),
    prior_shift: bool = True,
    label_skew: float | None = None,
    personal: str = config.PERSONAL,
    local_fallback: bool = True,
) -> str:
    """Run the benchmark; write JSON / PNG if asked; return the markdown report.

    ``rounds`` None = the task's ``bench_rounds`` (30 without). ``strategies`` other than
    plain FedAvg run next to FedAvg; each scenario's results are then keyed
    ``"scenario strategy"`` (just ``"scenario"`` with FedAvg alone). ``prior_shift`` False
    scores every probe by plain accuracy (the agent's scoring before prior-shifted scores).
    ``label_skew`` ALPHA: every client draws its labels from Dirichlet(ALPHA), inside its
    cluster too; ``personal``: the adaptation of mycelium's personal models and of the
    ``+ft`` baselines ("ft", "prior" or "none"); ``local_fallback`` False: their nodes
    choose between the group and personal models only, not their local-only model."""
    task_obj = load_task(task)  # TaskLoadError (ValueError): one line
    if rounds is None:
        rounds = getattr(task_obj, "bench_rounds", DEFAULT_ROUNDS)
    flags = _validate(
        scenarios,
        algorithms,
        task_scenarios=task_obj.scenarios,
        clusters=clusters,
        clients=clients,
        rounds=rounds,
        seed=seed,
        max_capacity=max_capacity,
        arrivals=arrivals,
        drift=drift,
        liars=liars,
        max_candidates=max_candidates,
        task=task,
        strategies=strategies,
        prior_shift=prior_shift,
        label_skew=label_skew,
        personal=personal,
        local_fallback=local_fallback,
    )
    for path, suffix in ((json_path, ".json"), (plot_path, ".png")):
        if path is not None and path.suffix.lower() != suffix:
            raise ValueError(f"{path}: expected a {suffix} file name")
    started = time.perf_counter()
    results: dict[str, list[sim.RunResult]] = {}
    timelines: dict[str, Timeline] = {}
    for label, sim_config in flags.runs():
        fed = Federation(sim_config)
        timelines[label] = fed.timeline
        results[label] = sim.run_all(fed, flags.algorithms)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if json_path is not None:
        body = to_json(flags.as_json(), results, timelines)
        body["wall_seconds"], body["peak_rss_mb"] = round(wall, 2), round(peak_mb, 1)
        _write(json_path, json.dumps(body, indent=2, sort_keys=True) + "\n")
    if plot_path is not None:
        from bench import learning_plot

        learning_plot.plot(results, timelines, plot_path)
    footer = f"wall {wall:.1f} s, peak RSS {peak_mb:.0f} MB (this process)"
    return markdown(results, timelines) + "\n\n" + footer


def _with_fedavg(strategies: Sequence[StrategyConfig]) -> tuple[StrategyConfig, ...]:
    """The requested strategies, FedAvg first (the baseline every other is compared with)."""
    chosen = list(dict.fromkeys(strategies))
    if not any(st.name == "fedavg" for st in chosen):
        chosen.insert(0, StrategyConfig())
    return tuple(chosen)


def to_json(
    config: dict[str, object],
    results: dict[str, list[sim.RunResult]],
    timelines: dict[str, Timeline],
) -> dict[str, object]:
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
    events = {s: _events(t) for s, t in timelines.items()}
    return {
        "config": config,
        "results": body,
        "events": events,
        "timing_seconds_per_round": timing,
    }


def _events(timeline: Timeline) -> dict[str, object]:
    """Arrivals, departures and the drift as 1-based rounds (what the plot marks)."""
    return {
        "arrivals": sorted(a + 1 for a in timeline.arrive if a > 0),
        "departures": sorted(d + 1 for d in timeline.leave if d is not None),
        "drift_round": None if timeline.drift_round is None else timeline.drift_round + 1,
        "drifted": len(timeline.drifted),
    }


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from exc


def markdown(results: dict[str, list[sim.RunResult]], timelines: dict[str, Timeline]) -> str:
    """One table: a row per scenario and algorithm; living-network columns when they apply."""
    arrivals = any(t.newcomers() for t in timelines.values())
    drift = any(t.drift_round is not None for t in timelines.values())
    head = (
        "| scenario | algorithm | accuracy | rounds to 90% oracle | migrations | groups "
        "| purity | moves/client | split views | below local | below local > SE |"
    )
    head += " newcomers settled |" * arrivals + " re-homed in 2 | vs oracle at D+3 |" * drift
    head += " s/round |"
    lines = [head, "| --- | --- |" + " ---: |" * (head.count("|") - 3)]
    for scenario, runs in results.items():
        oracle = next((r for r in runs if r.algorithm == "oracle"), None)
        timeline = timelines[scenario]
        for r in runs:
            cells = [
                scenario,
                r.algorithm,
                f"{r.accuracy:.3f}",
                _dash(r.rounds_to_90pct_oracle),
                str(r.migrations),
                str(r.groups),
                _dash(r.purity, ".2f"),
                f"{r.moves_after_placement / len(timeline.arrive):.2f}",
                str(r.split_views),
                _dash(r.below_local_share, ".2f"),
                _dash(r.below_local_se_share, ".2f"),
            ]
            if arrivals:
                cells.append(_dash(r.newcomers_settled, ".2f"))
            if drift:
                gap = after_drift_gap(r, oracle, timeline)
                cells += [_dash(r.drift_rehomed, ".2f"), _dash(gap, "+.3f")]
            cells.append(f"{r.seconds_per_round:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def after_drift_gap(
    result: sim.RunResult, oracle: sim.RunResult | None, timeline: Timeline
) -> float | None:
    """Accuracy minus oracle's three rounds after the drift (1-based round D + 3)."""
    if oracle is None or timeline.drift_round is None:
        return None
    at = timeline.drift_round + 3
    if at >= len(result.accuracy_per_round):
        return None
    return result.accuracy_per_round[at] - oracle.accuracy_per_round[at]


def _dash(value: float | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)
