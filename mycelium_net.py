"""Mycelium Net: a network of federated-learning networks.

One Typer entrypoint. Heavy modules (torch, flwr, fastapi) are imported inside the
commands that need them, so ``--help`` answers at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Mycelium Net: learning groups on Flower, found through a global registry.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print measured figures.")
app.add_typer(bench_app, name="bench")

LogLevel = Annotated[
    str, typer.Option(help="Logging level.", envvar="MYCELIUM_LOG_LEVEL", case_sensitive=False)
]


def _setup_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # One line per request is noise next to the node's state changes.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))


def _fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise (code 1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def registry(
    host: Annotated[str, typer.Option(help="Interface to bind.", envvar="MYCELIUM_HOST")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(help="TCP port.", envvar="MYCELIUM_PORT", min=1, max=65535)
    ] = 8000,
    db: Annotated[Path, typer.Option(help="SQLite database file.", envvar="MYCELIUM_DB")] = Path(
        "mycelium.db"
    ),
    node_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds without heartbeat before a node counts as dead.",
            min=0.1,
            envvar="MYCELIUM_NODE_TTL",
        ),
    ] = 90.0,
    group_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds without a coordinator report before a group has failed.",
            min=0.1,
            envvar="MYCELIUM_GROUP_TTL",
        ),
    ] = 120.0,
    max_model_mb: Annotated[
        float,
        typer.Option(
            help="Largest model upload in MiB.", min=0.001, envvar="MYCELIUM_MAX_MODEL_MB"
        ),
    ] = 64.0,
    log_level: LogLevel = "info",
) -> None:
    """Serve the global registry of learning groups (Swagger UI at /docs)."""
    _setup_logging(log_level)
    import registry as registry_module

    try:
        registry_module.serve(
            host=host,
            port=port,
            db_path=db,
            node_ttl=node_ttl,
            group_ttl=group_ttl,
            max_model_mb=max_model_mb,
            log_level=log_level,
        )
    except registry_module.RegistryStartError as exc:
        raise _fail(str(exc)) from None


def _parse_partition(value: str) -> tuple[int, int]:
    """Parse ``i/N`` (0 <= i < N) or raise a one-line BadParameter."""
    try:
        index_text, count_text = value.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise typer.BadParameter(f"expected i/N, got {value!r}", param_hint="--partition") from None
    if not 0 <= index < count:
        raise typer.BadParameter(f"need 0 <= i < N, got {value!r}", param_hint="--partition")
    return index, count


@app.command()
def node(
    name: Annotated[
        str, typer.Option(help="Node name shown in the registry.", envvar="MYCELIUM_NAME")
    ] = "node",
    registry_url: Annotated[
        str, typer.Option(help="Registry base URL.", envvar="MYCELIUM_REGISTRY_URL")
    ] = ("http://localhost:8000"),
    address: Annotated[
        str | None,
        typer.Option(help="Address others may reach this node at.", envvar="MYCELIUM_ADDRESS"),
    ] = None,
    task: Annotated[
        str, typer.Option(help="Task name; groups are per task.", envvar="MYCELIUM_TASK")
    ] = "digits",
    scenario: Annotated[
        str, typer.Option(help="rotate, permute or mixed.", envvar="MYCELIUM_SCENARIO")
    ] = "rotate",
    clusters: Annotated[
        int,
        typer.Option(help="Latent clusters K of the scenario.", min=1, envvar="MYCELIUM_CLUSTERS"),
    ] = 3,
    cluster: Annotated[
        int,
        typer.Option(help="This node's cluster c (0 <= c < K).", min=0, envvar="MYCELIUM_CLUSTER"),
    ] = 0,
    partition: Annotated[
        str, typer.Option(help="This node's data shard i/N.", envvar="MYCELIUM_PARTITION")
    ] = "0/6",
    seed: Annotated[
        int, typer.Option(help="Seed of the data split and model.", envvar="MYCELIUM_SEED")
    ] = 0,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Your own .npz with arrays x and y (replaces the scenario options).",
            envvar="MYCELIUM_DATA",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between heartbeats.", min=0.1, envvar="MYCELIUM_HEARTBEAT_INTERVAL"
        ),
    ] = 30.0,
    group_evaluation_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between probes of other groups.",
            min=0.1,
            envvar="MYCELIUM_GROUP_EVALUATION_INTERVAL",
        ),
    ] = 60.0,
    performance_threshold: Annotated[
        float,
        typer.Option(
            help="Minimum accuracy gain (on own data) to migrate.",
            min=0,
            max=1,
            envvar="MYCELIUM_PERFORMANCE_THRESHOLD",
        ),
    ] = 0.05,
    cooldown: Annotated[
        float,
        typer.Option(
            help="Seconds after a move before the next.", min=0, envvar="MYCELIUM_COOLDOWN"
        ),
    ] = 120.0,
    max_capacity: Annotated[
        int,
        typer.Option(
            help="Capacity of a group this node founds.", min=1, envvar="MYCELIUM_MAX_CAPACITY"
        ),
    ] = 10,
    join_policy: Annotated[
        str,
        typer.Option(
            help="open or invite-only, for a founded group.", envvar="MYCELIUM_JOIN_POLICY"
        ),
    ] = "open",
    invite: Annotated[
        str | None,
        typer.Option(help="Invite code for an invite-only group.", envvar="MYCELIUM_INVITE"),
    ] = None,
    join: Annotated[
        int | None,
        typer.Option(
            help="Start in this group id regardless of the "
            "probe (the policy may move the node later).",
            envvar="MYCELIUM_JOIN",
        ),
    ] = None,
    warmup_epochs: Annotated[
        int,
        typer.Option(
            help="Local epochs before the first decision.", min=0, envvar="MYCELIUM_WARMUP_EPOCHS"
        ),
    ] = 20,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for Flower homes and logs (default runs/node-NAME).",
            envvar="MYCELIUM_WORK_DIR",
        ),
    ] = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a learning node: discover, join or found a group, train, migrate."""
    _setup_logging(log_level)
    if join_policy not in ("open", "invite-only"):
        raise _fail(f"--join-policy must be open or invite-only, not {join_policy!r}")
    if data is None and not 0 <= cluster < clusters:
        raise _fail(f"--cluster must be in [0, {clusters}), got {cluster}")
    if data is not None and not data.is_file():
        raise _fail(f"--data {data} is not a file")
    index, count = _parse_partition(partition)
    import mycelium_node

    config = mycelium_node.NodeConfig(
        name=name,
        registry_url=registry_url,
        node_address=address,
        task=task,
        scenario=scenario,
        clusters=clusters,
        cluster=cluster,
        partition_index=index,
        partition_count=count,
        seed=seed,
        data_path=data,
        heartbeat_interval=heartbeat_interval,
        group_evaluation_interval=group_evaluation_interval,
        performance_threshold=performance_threshold,
        cooldown=cooldown,
        max_capacity=max_capacity,
        join_policy=join_policy,
        invite_code=invite,
        join_group=join,
        warmup_epochs=warmup_epochs,
        work_dir=work_dir or Path("runs") / f"node-{name}",
    )
    try:
        code = mycelium_node.run_node(config)
    except ValueError as exc:  # bad data file or scenario
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def demo(
    nodes: Annotated[int, typer.Option(help="Number of nodes.", min=2, max=32)] = 6,
    scenario: Annotated[str, typer.Option(help="rotate, permute or mixed.")] = "rotate",
    clusters: Annotated[int, typer.Option(help="Latent clusters.", min=1, max=8)] = 3,
    duration: Annotated[
        float, typer.Option(help="Stop after this many seconds at most.", min=10)
    ] = 180.0,
    seed: Annotated[int, typer.Option(help="Seed of the data split.")] = 0,
    port: Annotated[
        int | None,
        typer.Option(
            help="Registry port (default 8000 when free, else any free port).", min=1, max=65535
        ),
    ] = None,
    keep_running: Annotated[
        bool, typer.Option(help="Leave the network up after the summary, until Ctrl-C.")
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for logs, report and figure (default: a new ./mycelium-demo-*)."),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the PNG figure here.")] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Start a registry and N nodes; watch groups form, learn and migrate."""
    _setup_logging(log_level)
    if scenario not in ("rotate", "permute", "mixed"):
        raise _fail(f"--scenario must be rotate, permute or mixed, not {scenario!r}")
    if port is not None and not _port_free(port):
        raise _fail(f"port {port} is already in use")
    import signal

    from rich.console import Console

    import demo as demo_module
    from mycelium.demo_view import LiveView

    def _sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _sigterm)
    config = demo_module.DemoConfig(
        nodes=nodes,
        scenario=scenario,
        clusters=clusters,
        duration=duration,
        seed=seed,
        port=port,
        keep_running=keep_running,
        run_dir=run_dir,
        report_path=report,
        plot_path=plot,
    )
    console = Console()
    view = LiveView(console)
    try:
        result = demo_module.run_demo(config, view)
    except KeyboardInterrupt:
        view.close()
        raise _fail("interrupted; every process was stopped") from None
    except (RuntimeError, ValueError) as exc:
        view.close()
        raise _fail(str(exc)) from None
    view.close()
    if result["groups"] == []:
        raise _fail("no group formed; see the logs in the run folder")


def _port_free(port: int) -> bool:
    from mycelium.procs import port_is_free

    return port_is_free(port)


@app.command()
def group(
    registry_url: Annotated[
        str, typer.Option(help="Registry base URL.", envvar="MYCELIUM_REGISTRY_URL")
    ] = "http://localhost:8000",
    name: Annotated[
        str, typer.Option(help="Group name shown in the registry.", envvar="MYCELIUM_NAME")
    ] = "group",
    task: Annotated[str, typer.Option(help="Task name.", envvar="MYCELIUM_TASK")] = "digits",
    max_capacity: Annotated[
        int, typer.Option(help="Most live members.", min=1, envvar="MYCELIUM_MAX_CAPACITY")
    ] = 10,
    join_policy: Annotated[
        str, typer.Option(help="open or invite-only.", envvar="MYCELIUM_JOIN_POLICY")
    ] = "open",
    performance_threshold: Annotated[
        float,
        typer.Option(
            help="Gain members need to leave for another group (published).",
            min=0,
            max=1,
            envvar="MYCELIUM_PERFORMANCE_THRESHOLD",
        ),
    ] = 0.05,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the Flower home and logs (default runs/group-NAME).",
            envvar="MYCELIUM_WORK_DIR",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between group heartbeats.", min=0.1, envvar="MYCELIUM_HEARTBEAT_INTERVAL"
        ),
    ] = 10.0,
    local_epochs: Annotated[
        int | None,
        typer.Option(
            help="Local epochs per round (default: the members').",
            min=0,
            envvar="MYCELIUM_LOCAL_EPOCHS",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Local learning rate (default: the members').", min=1e-9, envvar="MYCELIUM_LR"
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Local batch size (default: the members').", min=1, envvar="MYCELIUM_BATCH_SIZE"
        ),
    ] = None,
    num_rounds: Annotated[
        int,
        typer.Option(
            help="Rounds to run (0 = until stopped).", min=0, envvar="MYCELIUM_NUM_ROUNDS"
        ),
    ] = 0,
    min_round_timeout: Annotated[
        float,
        typer.Option(
            help="Lower bound of the adaptive round timeout (s).",
            min=1,
            envvar="MYCELIUM_MIN_ROUND_TIMEOUT",
        ),
    ] = 30.0,
    log_level: LogLevel = "info",
) -> None:
    """Host a learning group (SuperLink + ServerApp) without a local learner, until Ctrl-C."""
    _setup_logging(log_level)
    if join_policy not in ("open", "invite-only"):
        raise _fail(f"--join-policy must be open or invite-only, not {join_policy!r}")
    from mycelium.client import RegistryError
    from mycelium.group_host import GroupHost, GroupHostError, host_until_signalled

    host = GroupHost(
        registry_url,
        name=name,
        task=task,
        max_capacity=max_capacity,
        join_policy=join_policy,
        performance_threshold=performance_threshold,
        work_dir=work_dir or Path("runs") / f"group-{name}",
        heartbeat_interval=heartbeat_interval,
        run_config={
            "local-epochs": -1 if local_epochs is None else local_epochs,
            "lr": -1.0 if lr is None else lr,
            "batch-size": -1 if batch_size is None else batch_size,
            "num-rounds": num_rounds,
            "min-round-timeout": min_round_timeout,
        },
    )
    try:
        code = host_until_signalled(host)
    except (GroupHostError, RegistryError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@bench_app.command("registry")
def bench_registry(
    nodes: Annotated[int, typer.Option(help="Registered nodes.", min=1)] = 10_000,
    groups: Annotated[int, typer.Option(help="Groups the nodes are spread over.", min=1)] = 1_000,
    connections: Annotated[int, typer.Option(help="Concurrent clients.", min=1)] = 64,
    duration: Annotated[float, typer.Option(help="Seconds per measurement.", min=1)] = 10.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures as JSON here.")
    ] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Measure registry heartbeat and discovery throughput against a bare endpoint."""
    _setup_logging(log_level)
    from bench import registry_bench

    try:
        report = registry_bench.run(
            nodes=nodes,
            groups=groups,
            connections=connections,
            duration=duration,
            json_path=json_path,
        )
    except registry_bench.BenchError as exc:
        raise _fail(str(exc)) from None
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
        int | None, typer.Option(help="Rounds R (default: the task's, digits 30, mnist 20).", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_capacity: Annotated[
        int | None, typer.Option(help="Group capacity (default: number of clients).", min=1)
    ] = None,
    algorithms: Annotated[
        list[str] | None,
        typer.Option(help="local, global, oracle, ifca, naive, mycelium; repeat (default: all)."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = (
        None
    ),
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Write accuracy-per-round PNG.")
    ] = None,
    task: Annotated[
        str,
        typer.Option(help="Task: digits, mnist, package.module:attr or file.py:attr."),
    ] = "digits",
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            help="Group aggregation: fedavg, fedprox, fedadam, fedyogi, fedadagrad; repeat "
            "(others run next to fedavg)."
        ),
    ] = None,
    proximal_mu: Annotated[
        float | None, typer.Option(help="FedProx's mu (default 0.01).", min=0)
    ] = None,
    server_lr: Annotated[
        float | None, typer.Option(help="Server learning rate (eta) of FedAdam/Yogi/Adagrad.")
    ] = None,
    tau: Annotated[float | None, typer.Option(help="FedAdam/Yogi/Adagrad's tau.")] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Simulate migration policies on clustered non-IID data of a task, in one process."""
    _setup_logging(log_level)
    from mycelium import sim
    from mycelium.strategy import configs_for

    try:
        strategies = configs_for(
            strategy or ["fedavg"], proximal_mu=proximal_mu, server_lr=server_lr, tau=tau
        )
        table = sim.run_cli(
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
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(table)


@bench_app.command("flower")
def bench_flower(
    rounds: Annotated[int, typer.Option(help="Measured rounds per mode.", min=1)] = 4,
    mode: Annotated[
        list[str] | None,
        typer.Option(help="warm and/or cold; repeat for both (default: both)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures as JSON here.")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep logs here (default: a temporary folder).")
    ] = None,
    migration: Annotated[
        bool, typer.Option(help="Also measure migration latency and node/group RSS.")
    ] = True,
    log_level: LogLevel = "warning",
) -> None:
    """Round time of a 3-node group, warm-trainer vs quickstart ClientApp; RSS; start-up;
    migration latency with real node agents."""
    _setup_logging(log_level)
    from bench import flower_bench, migration_bench

    sections = [migration_bench.measure_migration] if migration else []
    try:
        report = flower_bench.run(
            rounds=rounds,
            modes=mode or ("warm", "cold"),
            json_path=json_path,
            workdir=work_dir,
            sections=sections,
        )
    except (flower_bench.BenchError, OSError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(report)


if __name__ == "__main__":
    app()
