"""``mycelium bench ...``: benchmarks that print measured figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mycelium import config
from mycelium.cli._common import (
    Beta1,
    Beta2,
    LogLevel,
    ProximalMu,
    ServerLr,
    TaskRef,
    Tau,
    fail,
    setup_logging,
)

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print measured figures.")

Rounds = Annotated[int, typer.Option(help="Measured rounds per mode.", min=1)]
JsonOut = Annotated[
    Path | None,
    typer.Option("--json", resolve_path=True, help="Also write the figures as JSON here."),
]
WorkDir = Annotated[
    Path | None,
    typer.Option(resolve_path=True, help="Keep logs here (default: a temporary folder)."),
]


@bench_app.command("registry")
def bench_registry(
    nodes: Annotated[int, typer.Option(help="Registered nodes.", min=1)] = 10_000,
    groups: Annotated[int, typer.Option(help="Groups the nodes are spread over.", min=1)] = 1_000,
    connections: Annotated[int, typer.Option(help="Concurrent clients.", min=1)] = 64,
    duration: Annotated[float, typer.Option(help="Seconds per measurement.", min=1)] = 10.0,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", resolve_path=True, help="Also write the figures as JSON here."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="The registry's database (default: a SQLite file in a temporary folder); "
            "postgresql://USER@HOST:PORT/DB measures the PostgreSQL store (an empty database).",
        ),
    ] = None,
    processes: Annotated[
        int, typer.Option(help="Registry processes over the database (PostgreSQL).", min=1)
    ] = 1,
    log_level: LogLevel = "warning",
) -> None:
    """Measure registry heartbeat and discovery throughput against a bare endpoint."""
    setup_logging(log_level)
    from bench import BenchError, registry_bench

    try:
        report = registry_bench.run(
            nodes=nodes,
            groups=groups,
            connections=connections,
            duration=duration,
            json_path=json_path,
            db=db,
            processes=processes,
        )
    except BenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(report)


@bench_app.command("learning")
def bench_learning(
    scenario: Annotated[
        list[str] | None,
        typer.Option(help="rotate, permute or mixed; repeat for several (default: all three)."),
    ] = None,
    clusters: Annotated[int, typer.Option(help="Latent clusters K.", min=1)] = 4,
    clients: Annotated[int, typer.Option(help="Clients N.", min=1)] = 24,
    rounds: Annotated[
        int | None,
        typer.Option(help="Rounds R (default: the task's; digits 30, mnist 20).", min=1),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_capacity: Annotated[
        int | None, typer.Option(help="Group capacity (default: number of clients).", min=1)
    ] = None,
    algorithms: Annotated[
        list[str] | None,
        typer.Option(
            help="local, global, oracle, ifca, naive, first-k, mycelium, global+ft, "
            "oracle+ft, ifca+ft; repeat (default: all)."
        ),
    ] = None,
    arrivals: Annotated[
        bool,
        typer.Option(
            "--arrivals",
            help="Half the clients arrive over the first half (Poisson); a fifth leave later.",
        ),
    ] = False,
    drift: Annotated[
        str | None,
        typer.Option(help="ROUND:SHARE: from that round a share of nodes switch cluster."),
    ] = None,
    liars: Annotated[
        int, typer.Option(help="Groups publishing accuracy inflated by +0.3 (oldest first).")
    ] = 0,
    max_candidates: Annotated[
        int, typer.Option(help="Groups a node probes besides its own.", min=1)
    ] = config.MAX_CANDIDATES,
    prior_shift: Annotated[
        bool,
        typer.Option(
            help="Nodes score group models with their own label prior added (as the agent "
            "does); --no-prior-shift scores plain accuracy."
        ),
    ] = True,
    label_skew: Annotated[
        float | None,
        typer.Option(
            help="ALPHA: inside each cluster too, every client draws its labels from "
            "Dirichlet(ALPHA) (mixed: replaces its 0.5); tested on its own label mix."
        ),
    ] = None,
    personal: Annotated[
        str,
        typer.Option(
            help="Personal models of mycelium's nodes and of the +ft baselines: ens "
            "(ensemble of the group, fine-tuned and local-only models chosen on the val "
            "loss), ft (fine-tune), prior (label-prior correction) or none."
        ),
    ] = config.PERSONAL,
    local_fallback: Annotated[
        bool,
        typer.Option(
            help="A personalising node may predict with its local-only model (ens: as a "
            "member of its ensemble); --no-local-fallback: group and personal models only."
        ),
    ] = True,
    json_path: Annotated[
        Path | None, typer.Option("--json", resolve_path=True, help="Write results as JSON.")
    ] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", resolve_path=True, help="Write accuracy-per-round PNG.")
    ] = None,
    task: TaskRef = config.TASK,
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            help="fedavg, fedprox, fedadam, fedyogi or fedadagrad; repeat (others run next "
            "to fedavg)."
        ),
    ] = None,
    proximal_mu: ProximalMu = None,
    server_lr: ServerLr = None,
    beta_1: Beta1 = None,
    beta_2: Beta2 = None,
    tau: Tau = None,
    log_level: LogLevel = "warning",
) -> None:
    """Simulate migration policies on clustered non-IID data of a task, in one process."""
    setup_logging(log_level)
    from bench import learning_bench
    from mycelium.learning.strategy import configs_for

    try:
        strategies = configs_for(
            strategy or [config.STRATEGY],
            proximal_mu=proximal_mu,
            server_lr=server_lr,
            beta_1=beta_1,
            beta_2=beta_2,
            tau=tau,
        )
        table = learning_bench.run_cli(
            task=task,
            strategies=strategies,
            scenarios=scenario,
            clusters=clusters,
            clients=clients,
            rounds=rounds,
            seed=seed,
            max_capacity=max_capacity,
            algorithms=algorithms,
            json_path=json_path,
            plot_path=plot_path,
            arrivals=arrivals,
            drift=drift,
            liars=liars,
            max_candidates=max_candidates,
            prior_shift=prior_shift,
            label_skew=label_skew,
            personal=personal,
            local_fallback=local_fallback,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(table)


@bench_app.command("flower")
def bench_flower(
    rounds: Rounds = 4,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="warm, cold and/or pinned (warm, served by the agent's own executor); "
            "repeat for several (default: warm and cold)."
        ),
    ] = None,
    json_path: JsonOut = None,
    work_dir: WorkDir = None,
    migration: Annotated[
        bool, typer.Option(help="Also measure migration latency and node/group RSS.")
    ] = True,
    log_level: LogLevel = "warning",
) -> None:
    """Round time of a 3-node group, warm-trainer vs quickstart ClientApp; RSS; start-up;
    migration latency with real node agents."""
    setup_logging(log_level)
    from bench import BenchError, flower_bench, migration_bench

    sections = [migration_bench.measure_migration] if migration else []
    try:
        report = flower_bench.run(
            rounds=rounds,
            modes=mode or ("warm", "cold"),
            json_path=json_path,
            workdir=work_dir,
            sections=sections,
        )
    except (BenchError, OSError, RuntimeError) as exc:
        raise fail(str(exc)) from None
    typer.echo(report)


@bench_app.command("net")
def bench_net(
    rounds: Rounds = 4,
    mode: Annotated[
        list[str] | None,
        typer.Option(help="loopback and/or tls; repeat for both (default: both)."),
    ] = None,
    json_path: JsonOut = None,
    work_dir: WorkDir = None,
    log_level: LogLevel = "warning",
) -> None:
    """Round time of a 3-node group on loopback without TLS vs across network namespaces
    with TLS (needs root), and a new node's start to its first round."""
    setup_logging(log_level)
    from bench import BenchError, net_bench

    try:
        table = net_bench.run(
            rounds=rounds, modes=mode or net_bench.MODES, json_path=json_path, workdir=work_dir
        )
    except BenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(table)


@bench_app.command("faults")
def bench_faults(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="lossy, outage, partition, host_partition, mass_partition, kill_lossy and/or "
            "registry_partition (needs PostgreSQL); repeat or give a comma list (default: all)."
        ),
    ] = None,
    outage: Annotated[
        float, typer.Option(help="Seconds the registry stays hung (outage).", min=1)
    ] = 60.0,
    window: Annotated[
        float,
        typer.Option(help="Seconds over which requests are counted before and after it.", min=1),
    ] = 60.0,
    loss: Annotated[
        float,
        typer.Option(help="Share of packets dropped on every link (lossy).", min=0.001, max=0.5),
    ] = 0.02,
    node_ttl: Annotated[
        float, typer.Option(help="The registry's --node-ttl; the partition lasts two.", min=1)
    ] = 5.0,
    rounds: Rounds = 3,
    seed: Annotated[
        int, typer.Option(help="Seed of the nodes' data split and model, and of the soak's faults.")
    ] = 0,
    soak: Annotated[
        float | None,
        typer.Option(
            help="Run the chaos soak for this many seconds instead of the scenarios: seeded "
            "random faults on 4 hosts with 6 nodes, invariants checked throughout.",
            min=10,
        ),
    ] = None,
    json_path: JsonOut = None,
    work_dir: WorkDir = None,
    log_level: LogLevel = "warning",
) -> None:
    """Issue 24's faults on the real stack in network namespaces (needs root, nftables,
    nginx): 2% loss on every link, the registry hung then killed and restarted, a member's
    host or the group's own host cut from the registry, half the hosts cut, the group's host
    killed under loss, one of two registry processes over PostgreSQL cut from the nodes.
    Prints each scenario's invariants and figures; exit 1 when one fails."""
    setup_logging(log_level)
    from bench import BenchError, faults_bench, faults_report

    if soak is not None:
        _soak(soak, seed, json_path, work_dir)
        return
    try:
        settings = faults_report.Settings(
            rounds=rounds, loss=loss, outage_s=outage, window_s=window, node_ttl_s=node_ttl,
            seed=seed,
        )  # fmt: skip
        names = faults_report.parse_scenarios(scenario)
        report = faults_bench.run(
            scenarios=names, settings=settings, json_path=json_path, workdir=work_dir
        )
    except BenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(faults_report.format_report(report))
    if not report.passed:
        failed = [s.name for s in report.scenarios if not s.passed]
        raise fail(f"invariants failed in {', '.join(failed)}")


def _soak(seconds: float, seed: int, json_path: Path | None, work_dir: Path | None) -> None:
    from bench import BenchError, faults_soak

    try:
        report = faults_soak.run(seconds=seconds, seed=seed, json_path=json_path, workdir=work_dir)
    except BenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(faults_soak.format_soak(report))
    if not report.passed:
        raise fail(f"the soak (seed {seed}) failed an invariant")


@bench_app.command("scale")
def bench_scale(
    nodes: Annotated[
        str, typer.Option(help="Node counts N, comma-separated; each runs alone with N/6 clusters.")
    ] = "6,12,24,32",
    seed: Annotated[int, typer.Option(help="Seed of the nodes' data split and model.")] = 0,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Seconds each N may take to settle (default: 3 s per node + 180).", min=10
        ),
    ] = None,
    json_path: JsonOut = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", resolve_path=True, help="Write the costs-vs-N PNG.")
    ] = None,
    work_dir: WorkDir = None,
    log_level: LogLevel = "warning",
) -> None:
    """The real stack with N nodes on loopback: time to settle, purity, moves, round time,
    registry traffic by route, model bytes, peak PSS by kind of process, CPU per node."""
    setup_logging(log_level)
    from bench import BenchError, scale_bench

    outputs = {"json_path": json_path, "plot_path": plot_path, "workdir": work_dir}
    try:
        counts = scale_bench.parse_nodes(nodes)
        table = scale_bench.run(nodes=counts, seed=seed, duration=duration, **outputs)
    except (BenchError, OSError, RuntimeError) as exc:
        raise fail(str(exc)) from None
    typer.echo(table)
