"""What every command shares: the log-level option, logging set-up, one-line errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mycelium import config

if TYPE_CHECKING:
    from mycelium.client.endpoints import RegistryEndpoints
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
    typer.Option(
        help=f"FedProx's mu (default {config.PROXIMAL_MU:g}).",
        min=0,
        envvar="MYCELIUM_PROXIMAL_MU",
    ),
]
Beta1 = Annotated[
    float | None,
    typer.Option(
        "--beta-1",
        help="First-moment decay (beta_1) of fedadam/fedyogi, in [0, 1) (default: flwr's).",
        envvar="MYCELIUM_BETA_1",
    ),
]
Beta2 = Annotated[
    float | None,
    typer.Option(
        "--beta-2",
        help="Second-moment decay (beta_2) of fedadam/fedyogi, in [0, 1) (default: flwr's).",
        envvar="MYCELIUM_BETA_2",
    ),
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

# Across machines (docs/architecture.md "Ports, exposure and TLS").
BindHost = Annotated[
    str,
    typer.Option(
        "--host",
        help="Interface a group's SuperLink binds; off loopback it serves TLS with the "
        "group's own certificate.",
        envvar="MYCELIUM_HOST",
    ),
]
PublicHost = Annotated[
    str | None,
    typer.Option(
        help="Name or address other hosts use to reach this one (default: --host unless "
        "it is 0.0.0.0).",
        envvar="MYCELIUM_PUBLIC_HOST",
    ),
]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Accept plaintext off loopback (no TLS). Only on a network you trust.",
        envvar="MYCELIUM_INSECURE",
    ),
]
RegistryUrls = Annotated[
    str,
    typer.Option(
        "--registry-url",
        help="Registry base URL, or several comma-separated (URL1,URL2: registry processes "
        "sharing one database): the first is used while it answers, the next when it fails.",
        envvar="MYCELIUM_REGISTRY_URL",
    ),
]
RegistryCa = Annotated[
    Path | None,
    typer.Option(
        resolve_path=True,
        help="CA certificate (PEM) that signed the registry's HTTPS certificate "
        "(default: the system's trust store).",
        envvar="MYCELIUM_REGISTRY_CA",
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


def check_network(
    what: str,
    *,
    registry_url: str,
    registry_ca: Path | None,
    host: str,
    public_host: str | None,
    insecure: bool,
) -> RegistryEndpoints:
    """Check a node's or group host's network options before anything starts; return the
    registry URLs (``--registry-url URL1,URL2``). One-line error and exit 1 for a URL that
    is not http(s)://HOST[:PORT], plain http to another host (unless --insecure), an
    unreadable CA file, or a group address the exposure rule refuses. The rules hold for
    every URL given; the CA file applies to each."""
    from mycelium.client.endpoints import EndpointError, RegistryEndpoints
    from mycelium.net.addresses import AddressError, check_registry_url, check_shared_network
    from mycelium.net.certs import CertificateError
    from mycelium.net.tls import plan_group_exposure, registry_verify

    ca_file = str(registry_ca) if registry_ca else None
    try:
        endpoints = RegistryEndpoints.parse(registry_url)
        for url in endpoints.urls:
            check_registry_url(url, ca_file=ca_file, insecure=insecure)
        registry_verify(registry_ca)
        exposure = plan_group_exposure(host=host, public_host=public_host, insecure=insecure)
        for url in endpoints.urls:
            check_shared_network(what, url, exposure)
    except (EndpointError, AddressError, CertificateError) as exc:
        raise fail(str(exc)) from None
    return endpoints


def strategy_from_flags(name: str, *params: float | None) -> StrategyConfig:
    """The group strategy the flags describe (``--strategy``, then its parameters in
    StrategyConfig's order: ``--proximal-mu``, ``--server-lr``, ``--beta-1``, ``--beta-2``,
    ``--tau``), or a one-line error (exit 1)."""
    from mycelium.learning.strategy import StrategyConfig, StrategyError

    try:
        return StrategyConfig(name, *params)
    except StrategyError as exc:
        raise fail(str(exc)) from None


def absolute_task_ref(reference: str) -> str:
    """``path/file.py:attr`` with an absolute path (a child process may run elsewhere);
    other references unchanged."""
    module, sep, attr = reference.strip().rpartition(":")
    if sep and module.endswith(".py"):
        return f"{Path(module).expanduser().resolve()}:{attr}"
    return reference
