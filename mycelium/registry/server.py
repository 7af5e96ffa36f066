"""Serving the registry with uvicorn, with one-line errors for what stops it at start-up."""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

from mycelium import config
from mycelium.client import TokenFileError, read_token_file
from mycelium.net.addresses import AddressError, Exposure, plan_exposure
from mycelium.net.certs import CertificateError, check_server_material
from mycelium.registry.app import create_app
from mycelium.registry.settings import Settings
from mycelium.registry.store import StoreUnusable, check

logger = logging.getLogger(__name__)


class RegistryStartError(Exception):
    """The registry could not start (port taken, database not usable)."""


def serve(
    *,
    host: str,
    port: int,
    db_path: Path | str,
    node_ttl: float = config.NODE_TTL_S,
    group_ttl: float = config.GROUP_TTL_S,
    max_model_mb: float = config.MAX_MODEL_MB,
    operator_token_file: Path | None = None,
    max_groups_per_node: int = config.MAX_GROUPS_PER_NODE,
    self_preservation: tuple[float, float] = (
        config.SELF_PRESERVATION_THRESHOLD,
        config.SELF_PRESERVATION_MAX_S,
    ),
    log_level: str = "info",
    public_host: str | None = None,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
    insecure: bool = False,
) -> None:
    """Serve the registry with uvicorn (uvloop + httptools, no access log) until stopped.


    ``operator_token_file`` holds the token that lets a host without a node create groups
    (read here, never logged); without it only registered nodes can. HTTPS with
    ``ssl_certfile``/``ssl_keyfile``; off loopback that is required unless ``insecure``
    (see :func:`mycelium.net.addresses.plan_exposure`). What stops the start (address, TLS
    material, database, token file, port) is a :class:`RegistryStartError` with a one-line
    message.
    """
    import uvicorn

    from mycelium.dashboard.server import StreamClosingServer

    exposure = _plan_exposure(host, public_host, ssl_certfile, ssl_keyfile, insecure)
    try:
        check(db_path)
        operator_token = read_token_file(operator_token_file) if operator_token_file else None
    except (StoreUnusable, TokenFileError) as exc:
        raise RegistryStartError(str(exc)) from None
    settings = Settings(
        db_path=db_path,
        node_ttl=node_ttl,
        group_ttl=group_ttl,
        max_model_mb=max_model_mb,
        operator_token=operator_token,
        max_groups_per_node=max_groups_per_node,
        self_preservation_threshold=self_preservation[0],
        self_preservation_max_s=self_preservation[1],
    )
    sock = _bind(host, port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=5,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = StreamClosingServer(config, app.state.dashboard)
    who = "nodes and the operator" if operator_token else "nodes only"
    scheme = "https" if exposure.tls else "http"
    where = exposure.advertised(port)
    logger.info(
        "registry on %s://%s (bound %s, db %s, docs at /docs)", scheme, where, host, db_path
    )
    logger.info("dashboard at %s://%s/dashboard, metrics at /metrics", scheme, where)
    logger.info("groups may be created by %s", who)
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:
        raise RegistryStartError(f"uvicorn stopped at start-up (exit {exc.code})") from None
    finally:
        sock.close()
    if not server.started:
        raise RegistryStartError("the registry did not start; see the log above")


def _plan_exposure(
    host: str,
    public_host: str | None,
    certfile: Path | None,
    keyfile: Path | None,
    insecure: bool,
) -> Exposure:
    """Where the registry binds and what it is called, or a one-line RegistryStartError."""
    if (certfile is None) != (keyfile is None):
        raise RegistryStartError("give both --ssl-certfile and --ssl-keyfile, or neither")
    try:
        exposure = plan_exposure(
            what="registry",
            host=host,
            public_host=public_host,
            tls=certfile is not None,
            insecure=insecure,
            tls_hint="--ssl-certfile/--ssl-keyfile",
        )
        if certfile is not None and keyfile is not None:
            check_server_material(certfile, keyfile, names=[exposure.public_host])
    except (AddressError, CertificateError) as exc:
        raise RegistryStartError(str(exc)) from None
    return exposure


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here with uvicorn's options and handed to uvicorn: no
    check-then-bind race, and connections a killed registry left in TIME_WAIT do not block
    a restart on its port."""
    from mycelium.procs import bind_socket

    try:
        return bind_socket(port, host)
    except OSError as exc:
        reason = "already in use" if exc.errno == errno.EADDRINUSE else f"not usable ({exc})"
        raise RegistryStartError(f"port {port} on {host} is {reason}") from None
