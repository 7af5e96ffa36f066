"""``mycelium group``: host a learning group without a local learner."""

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


def group(
    registry_url: RegistryUrls = config.REGISTRY_URL,
    name: Annotated[
        str, typer.Option(help="Group name shown in the registry.", envvar="MYCELIUM_NAME")
    ] = "group",
    task: TaskRef = config.TASK,
    strategy: StrategyName = config.STRATEGY,
    proximal_mu: ProximalMu = None,
    server_lr: ServerLr = None,
    beta_1: Beta1 = None,
    beta_2: Beta2 = None,
    tau: Tau = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the group's initial model.", envvar="MYCELIUM_SEED")
    ] = 0,
    max_capacity: Annotated[
        int, typer.Option(help="Most live members.", min=1, envvar="MYCELIUM_MAX_CAPACITY")
    ] = config.MAX_CAPACITY,
    join_policy: Annotated[
        str, typer.Option(help="open or invite-only.", envvar="MYCELIUM_JOIN_POLICY")
    ] = config.JOIN_POLICY,
    performance_threshold: Annotated[
        float,
        typer.Option(
            help="Gain members need to leave for another group (published).",
            min=0,
            max=1,
            envvar="MYCELIUM_PERFORMANCE_THRESHOLD",
        ),
    ] = config.PERFORMANCE_THRESHOLD,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="Folder for the Flower home and logs (default runs/group-NAME).",
            envvar="MYCELIUM_WORK_DIR",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between group heartbeats.", min=0.1, envvar="MYCELIUM_HEARTBEAT_INTERVAL"
        ),
    ] = config.GROUP_HEARTBEAT_INTERVAL_S,
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
    ] = config.MIN_ROUND_TIMEOUT_S,
    operator_token_file: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="File holding the registry's operator token: a host without a node needs "
            "it to create its group.",
            envvar="MYCELIUM_OPERATOR_TOKEN_FILE",
        ),
    ] = None,
    host: BindHost = config.GROUP_HOST,
    public_host: PublicHost = None,
    registry_ca: RegistryCa = None,
    insecure: Insecure = False,
    log_level: LogLevel = "info",
) -> None:
    """Host a learning group (SuperLink + ServerApp) without a local learner, until Ctrl-C."""
    setup_logging(log_level)
    check_join_policy(join_policy)
    registry = check_network(
        "group",
        registry_url=registry_url,
        registry_ca=registry_ca,
        host=host,
        public_host=public_host,
        insecure=insecure,
    )
    from mycelium.client import RegistryError, read_token_file
    from mycelium.flower.errors import FlowerError
    from mycelium.flower.group_host import GroupHost, host_until_signalled
    from mycelium.flower.protocol import RunConfig

    chosen = strategy_from_flags(strategy, proximal_mu, server_lr, beta_1, beta_2, tau)
    try:
        creator_token = read_token_file(operator_token_file) if operator_token_file else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:  # builds the task's seeded model: the group's initial model in the registry
        group_host = GroupHost(
            registry,
            name=name,
            task=task,
            init_seed=seed,
            max_capacity=max_capacity,
            join_policy=join_policy,
            performance_threshold=performance_threshold,
            work_dir=(work_dir or config.RUNS_DIR / f"group-{name}").resolve(),
            heartbeat_interval=heartbeat_interval,
            creator_token=creator_token,
            run_config=RunConfig(
                local_epochs=local_epochs,
                lr=lr,
                batch_size=batch_size,
                num_rounds=num_rounds,
                min_round_timeout=min_round_timeout,
                strategy=chosen,
            ),
            host=host,
            public_host=public_host,
            insecure=insecure,
            registry_ca=registry_ca,
        )
    except (FlowerError, ValueError) as exc:  # refused address, unreadable CA, bad --task
        raise fail(str(exc)) from None
    try:
        code = host_until_signalled(group_host)
    except (FlowerError, RegistryError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a user sees one line, never a traceback
        logger.debug("group failed", exc_info=True)
        raise fail(f"unexpected {type(exc).__name__}: {exc}") from None
    raise typer.Exit(code)
