"""What every command shares: the log-level option, logging set-up, one-line errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mycelium import config

if TYPE_CHECKING:
    from mycelium.learning.strategy import StrategyConfig

LogLevel = Annotated[
    str, typer.Option(help="Logging level.", envvar="MYCELIUM_LOG_LEVEL", case_sensitive=False)
]
TaskRef = Annotated[
    str,
    typer.Option(
        "--task",
        help="Learning task: digits, mnist, package.module:attr or path/file.py:attr.",
        envvar="MYCELIUM_TASK",
    ),
]
ProximalMu = Annotated[
    float | None,
    typer.Option(help="FedProx's mu (default 0.01).", min=0, envvar="MYCELIUM_PROXIMAL_MU"),
]
ServerLr = Annotated[
    float | None,
    typer.Option(
        help="Server learning rate (eta) of fedadam/fedyogi/fedadagrad (default: flwr's).",
        envvar="MYCELIUM_SERVER_LR",
    ),
]
StrategyName = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="Aggregation of a group founded here: fedavg, fedprox, fedadam, fedyogi, fedadagrad.",
        envvar="MYCELIUM_STRATEGY",
    ),
]
Tau = Annotated[
    float | None,
    typer.Option(
        help="tau of fedadam/fedyogi/fedadagrad (default: flwr's).", envvar="MYCELIUM_TAU"
    ),
]


def setup_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    logging.basicConfig(level=numeric, format=config.LOG_FORMAT, datefmt=config.LOG_DATEFMT)
    # One line per request is noise next to the node's state changes.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise (code 1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def check_join_policy(join_policy: str) -> None:
    if join_policy not in config.JOIN_POLICIES:
        raise fail(f"--join-policy must be open or invite-only, not {join_policy!r}")


def strategy_from_flags(
    name: str, *, proximal_mu: float | None, server_lr: float | None, tau: float | None
) -> StrategyConfig:
    """The group strategy the flags describe, or a one-line error (exit 1)."""
    from mycelium.learning.strategy import StrategyConfig, StrategyError

    try:
        return StrategyConfig(name, proximal_mu=proximal_mu, server_lr=server_lr, tau=tau)
    except StrategyError as exc:
        raise fail(str(exc)) from None


def absolute_task_ref(reference: str) -> str:
    """``path/file.py:attr`` with an absolute path (a child process may run elsewhere);
    other references unchanged."""
    module, sep, attr = reference.strip().rpartition(":")
    if sep and module.endswith(".py"):
        return f"{Path(module).expanduser().resolve()}:{attr}"
    return reference
