"""``mycelium node``: run a learning node agent."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mycelium import config
from mycelium.cli._common import (
    Beta1,
    Beta2,
    BindHost,
    Insecure,
    LogLevel,
    ProximalMu,
    PublicHost,
    RegistryCa,
    RegistryUrls,
    ServerLr,
    StrategyName,
    TaskRef,
    Tau,
    check_join_policy,
    check_network,
    fail,
    setup_logging,
    strategy_from_flags,
)

logger = logging.getLogger(__name__)


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


def node(
    name: Annotated[
        str, typer.Option(help="Node name shown in the registry.", envvar="MYCELIUM_NAME")
    ] = "node",
    registry_url: RegistryUrls = config.REGISTRY_URL,
    address: Annotated[
        str | None,
        typer.Option(help="Address others may reach this node at.", envvar="MYCELIUM_ADDRESS"),
    ] = None,
    task: TaskRef = config.TASK,
    strategy: StrategyName = config.STRATEGY,
    proximal_mu: ProximalMu = None,
    server_lr: ServerLr = None,
    beta_1: Beta1 = None,
    beta_2: Beta2 = None,
    tau: Tau = None,
    scenario: Annotated[
        str, typer.Option(help="rotate, permute or mixed.", envvar="MYCELIUM_SCENARIO")
    ] = config.SCENARIO,
    clusters: Annotated[
        int,
        typer.Option(help="Latent clusters K of the scenario.", min=1, envvar="MYCELIUM_CLUSTERS"),
    ] = config.CLUSTERS,
    cluster: Annotated[
        int,
        typer.Option(help="This node's cluster c (0 <= c < K).", min=0, envvar="MYCELIUM_CLUSTER"),
    ] = 0,
    partition: Annotated[
        str, typer.Option(help="This node's data shard i/N.", envvar="MYCELIUM_PARTITION")
    ] = config.NODE_PARTITION,
    seed: Annotated[
        int, typer.Option(help="Seed of the data split and model.", envvar="MYCELIUM_SEED")
    ] = 0,
    label_skew: Annotated[
        float | None,
        typer.Option(
            help="ALPHA: this node draws its labels from Dirichlet(ALPHA) inside its cluster "
            "(as the mixed scenario does); its test split follows its own label mix.",
            envvar="MYCELIUM_LABEL_SKEW",
        ),
    ] = None,
    personal: Annotated[
        str,
        typer.Option(
            help="This node's personal model beside its group's: ens (the group model, "
            "plus its copy fine-tuned on the node's data, plus the node's local-only model, "
            "averaged, each kept where it lowers the validation loss), ft (the fine-tuned "
            "copy), prior (label-prior correction) or none; ft and prior are used where they "
            "beat the group model on the node's validation split.",
            envvar="MYCELIUM_PERSONAL",
        ),
    ] = config.PERSONAL,
    data: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="Your own .npz with arrays x and y (replaces the scenario options).",
            envvar="MYCELIUM_DATA",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between heartbeats.", min=0.1, envvar="MYCELIUM_HEARTBEAT_INTERVAL"
        ),
    ] = config.NODE_HEARTBEAT_INTERVAL_S,
    group_evaluation_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between probes of other groups.",
            min=0.1,
            envvar="MYCELIUM_GROUP_EVALUATION_INTERVAL",
        ),
    ] = config.GROUP_EVALUATION_INTERVAL_S,
    status_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between writes of status.json in the work dir.",
            min=0.1,
            envvar="MYCELIUM_STATUS_INTERVAL",
        ),
    ] = config.NODE_STATUS_INTERVAL_S,
    performance_threshold: Annotated[
        float,
        typer.Option(
            help="Minimum accuracy gain (on own data) to migrate.",
            min=0,
            max=1,
            envvar="MYCELIUM_PERFORMANCE_THRESHOLD",
        ),
    ] = config.PERFORMANCE_THRESHOLD,
    cooldown: Annotated[
        float,
        typer.Option(
            help="Seconds after a move before the next.", min=0, envvar="MYCELIUM_COOLDOWN"
        ),
    ] = config.COOLDOWN_S,
    max_capacity: Annotated[
        int,
        typer.Option(
            help="Capacity of a group this node founds.", min=1, envvar="MYCELIUM_MAX_CAPACITY"
        ),
    ] = config.MAX_CAPACITY,
    join_policy: Annotated[
        str,
        typer.Option(
            help="open or invite-only, for a founded group.", envvar="MYCELIUM_JOIN_POLICY"
        ),
    ] = config.JOIN_POLICY,
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
    ] = config.WARMUP_EPOCHS,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="Folder for Flower homes and logs (default runs/node-NAME).",
            envvar="MYCELIUM_WORK_DIR",
        ),
    ] = None,
    host: BindHost = config.GROUP_HOST,
    public_host: PublicHost = None,
    registry_ca: RegistryCa = None,
    insecure: Insecure = False,
    log_level: LogLevel = "info",
) -> None:
    """Run a learning node: discover, join or found a group, train, migrate."""
    setup_logging(log_level)
    check_join_policy(join_policy)
    registry = check_network(
        "node",
        registry_url=registry_url,
        registry_ca=registry_ca,
        host=host,
        public_host=public_host,
        insecure=insecure,
    )
    if data is None and not 0 <= cluster < clusters:
        raise fail(f"--cluster must be in [0, {clusters}), got {cluster}")
    if data is not None and not data.is_file():
        raise fail(f"--data {data} is not a file")
    if data is None:
        from mycelium.learning.data import check_scenario

        try:
            check_scenario(scenario, clusters)
        except ValueError as exc:
            raise fail(str(exc)) from None
    index, count = _parse_partition(partition)
    from mycelium.flower.protocol import RunConfig
    from mycelium.node.agent import run_node
    from mycelium.node.config import FatalNodeError, NodeConfig

    chosen = strategy_from_flags(strategy, proximal_mu, server_lr, beta_1, beta_2, tau)

    node_config = NodeConfig(
        name=name,
        registry=registry,
        node_address=address,
        task=task,
        group_run_config=RunConfig(strategy=chosen),
        scenario=scenario,
        clusters=clusters,
        cluster=cluster,
        partition_index=index,
        partition_count=count,
        seed=seed,
        label_skew=label_skew,
        personal=personal,
        data_path=data,
        heartbeat_interval=heartbeat_interval,
        group_evaluation_interval=group_evaluation_interval,
        status_interval=status_interval,
        performance_threshold=performance_threshold,
        cooldown=cooldown,
        max_capacity=max_capacity,
        join_policy=join_policy,
        invite_code=invite,
        join_group=join,
        warmup_epochs=warmup_epochs,
        work_dir=(work_dir or config.RUNS_DIR / f"node-{name}").resolve(),
        host=host,
        public_host=public_host,
        registry_ca=registry_ca,
        insecure=insecure,
    )
    try:
        code = run_node(node_config)
    except FatalNodeError as exc:  # what retrying cannot fix: one line, exit 1
        raise fail(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a user sees one line, never a traceback
        logger.debug("node failed", exc_info=True)
        raise fail(f"unexpected {type(exc).__name__}: {exc}") from None
    raise typer.Exit(code)
