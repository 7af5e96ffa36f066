"""``mycelium registry``: serve the global registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mycelium import config
from mycelium.cli._common import Insecure, LogLevel, PublicHost, fail, setup_logging


def registry(
    host: Annotated[str, typer.Option(help="Interface to bind.", envvar="MYCELIUM_HOST")] = (
        config.REGISTRY_HOST
    ),
    port: Annotated[
        int, typer.Option(help="TCP port.", envvar="MYCELIUM_PORT", min=1, max=65535)
    ] = config.REGISTRY_PORT,
    db: Annotated[
        str,
        typer.Option(
            help="Database: a SQLite file path or sqlite:///PATH (one registry process), or "
            "postgresql://USER@HOST:PORT/DB (any number of processes; the password comes "
            "from PGPASSWORD or ~/.pgpass, never the URL).",
            envvar="MYCELIUM_DB",
        ),
    ] = str(config.REGISTRY_DB),
    node_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds without heartbeat before a node counts as dead.",
            min=0.1,
            envvar="MYCELIUM_NODE_TTL",
        ),
    ] = config.NODE_TTL_S,
    group_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds without a coordinator report before a group has failed.",
            min=0.1,
            envvar="MYCELIUM_GROUP_TTL",
        ),
    ] = config.GROUP_TTL_S,
    max_model_mb: Annotated[
        float,
        typer.Option(
            help="Largest model upload in MiB.", min=0.001, envvar="MYCELIUM_MAX_MODEL_MB"
        ),
    ] = config.MAX_MODEL_MB,
    operator_token_file: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="File holding the operator token, which lets hosts without a node "
            "(the group command) create groups. Without it only nodes can.",
            envvar="MYCELIUM_OPERATOR_TOKEN_FILE",
        ),
    ] = None,
    max_groups_per_node: Annotated[
        int,
        typer.Option(
            help="Live groups one node may have created.",
            min=1,
            envvar="MYCELIUM_MAX_GROUPS_PER_NODE",
        ),
    ] = config.MAX_GROUPS_PER_NODE,
    self_preservation_threshold: Annotated[
        float,
        typer.Option(
            help="Share of live nodes lost within one node TTL past which the registry stops "
            "expiring nodes and failing groups (self-preservation); 1 turns it off.",
            min=0.0,
            max=1.0,
            envvar="MYCELIUM_SELF_PRESERVATION_THRESHOLD",
        ),
    ] = config.SELF_PRESERVATION_THRESHOLD,
    self_preservation_max: Annotated[
        float,
        typer.Option(
            help="Seconds after which self-preservation ends even if heartbeats did not recover.",
            min=0.0,
            envvar="MYCELIUM_SELF_PRESERVATION_MAX",
        ),
    ] = config.SELF_PRESERVATION_MAX_S,
    public_host: PublicHost = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="Server certificate (PEM): serve HTTPS. See `certs`.",
            envvar="MYCELIUM_SSL_CERTFILE",
        ),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="Private key of --ssl-certfile (PEM).",
            envvar="MYCELIUM_SSL_KEYFILE",
        ),
    ] = None,
    insecure: Insecure = False,
    log_level: LogLevel = "info",
) -> None:
    """Serve the global registry of learning groups (Swagger UI at /docs)."""
    setup_logging(log_level)
    from mycelium.registry.server import RegistryStartError, serve
    from mycelium.registry.store import StoreUnusable, database

    try:
        db_path = database(db)
    except StoreUnusable as exc:
        raise fail(str(exc)) from None
    try:
        serve(
            host=host,
            port=port,
            db_path=db_path,
            node_ttl=node_ttl,
            group_ttl=group_ttl,
            max_model_mb=max_model_mb,
            operator_token_file=operator_token_file,
            max_groups_per_node=max_groups_per_node,
            self_preservation=(self_preservation_threshold, self_preservation_max),
            log_level=log_level,
            public_host=public_host,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            insecure=insecure,
        )
    except RegistryStartError as exc:
        raise fail(str(exc)) from None
