"""Shared test fixtures and factories: a real registry process, the registry app in-process,
registered nodes and groups, a settable clock.

Pytest loads this module for every test; helpers are imported from it as
``from tests.conftest import ...``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mycelium import launch
from mycelium.api import GroupCreated, NodeCreated
from mycelium.client import RegistryClient
from mycelium.procs import ManagedProcess
from tests import postgres
from tests.postgres import PgServer

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = launch.ENTRYPOINT


def registry_args(
    port: int,
    db_path: Path,
    *,
    node_ttl: float | None = None,
    group_ttl: float | None = None,
    max_model_mb: float | None = None,
) -> list[str]:
    """Command line of the real registry (see :func:`mycelium.launch.registry_command`)."""
    return launch.registry_command(
        port=port, db=db_path, node_ttl=node_ttl, group_ttl=group_ttl, max_model_mb=max_model_mb
    )


registry_is_healthy = launch.registry_is_healthy

OPERATOR_TOKEN = "operator-token-of-the-test-suite"
"""The operator token of every test registry (a process or an in-process app)."""


def operator_token_file(tmp_path: Path) -> Path:
    """``tmp_path / "operator.token"`` holding :data:`OPERATOR_TOKEN` (for the
    ``--operator-token-file`` of ``registry`` and ``group``)."""
    path = tmp_path / "operator.token"
    path.write_text(OPERATOR_TOKEN + "\n")
    return path


@contextmanager
def start_registry(
    tmp_path: Path,
    *,
    db_path: Path | str | None = None,
    node_ttl: float | None = None,
    group_ttl: float | None = None,
    max_model_mb: float | None = None,
    name: str = "registry",
    port: int | None = None,
) -> Iterator[tuple[str, ManagedProcess]]:
    """Run the REAL registry on ``port`` (default: a free one); yield ``(url, process)``,
    stop it on exit.

    The database defaults to ``tmp_path / "registry.db"``; the log goes to
    ``tmp_path / f"{name}.log"``; the operator token is :data:`OPERATOR_TOKEN`. A registry
    that does not start fails the test with the cause.
    """
    try:
        started = launch.start_registry(
            db=db_path if db_path is not None else tmp_path / "registry.db",
            log_path=tmp_path / f"{name}.log",
            name=name,
            port=port,
            node_ttl=node_ttl,
            group_ttl=group_ttl,
            max_model_mb=max_model_mb,
            operator_token_file=operator_token_file(tmp_path),
        )
    except launch.LaunchError as exc:
        raise AssertionError(str(exc)) from None
    try:
        yield started.url, started.process
    finally:
        started.process.stop()


@dataclass(frozen=True)
class RegisteredNode:
    creds: NodeCreated
    client: RegistryClient

    @property
    def node_id(self) -> int:
        return self.creds.node_id


def register_node(
    url: str,
    *,
    name: str = "node",
    num_samples: int = 100,
    task: str = "digits",
    http: httpx.Client | None = None,
) -> RegisteredNode:
    """Register a node; the returned client carries its token."""
    client = RegistryClient(url, http=http)
    creds = client.register_node(name=name, num_samples=num_samples, task=task)
    return RegisteredNode(creds=creds, client=client)


def create_group(
    url: str,
    *,
    name: str = "group",
    max_capacity: int = 10,
    join_policy: str = "open",
    task: str = "digits",
    http: httpx.Client | None = None,
) -> tuple[GroupCreated, RegistryClient]:
    """Create a group as the operator; the returned client carries the group token."""
    creds = RegistryClient(url, token=OPERATOR_TOKEN, http=http).create_group(
        name=name,
        fleet_address="127.0.0.1:9092",
        task=task,
        max_capacity=max_capacity,
        join_policy=join_policy,
    )
    return creds, RegistryClient(url, token=creds.group_token, http=http)


class FakeClock:
    """A settable clock to inject as ``Settings.clock`` (unix seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def registry_app(db_path: Path | str, **settings: Any) -> Iterator[TestClient]:
    """The registry app in-process (lifespan run) behind a starlette TestClient.

    ``settings`` are :class:`registry.Settings` fields; the sweeper only runs when a test
    calls :func:`sweep` unless ``sweep_interval`` is given; the operator token is
    :data:`OPERATOR_TOKEN` unless ``operator_token`` is given.
    """
    import registry

    settings.setdefault("sweep_interval", 3600.0)
    settings.setdefault("operator_token", OPERATOR_TOKEN)
    app = registry.create_app(registry.Settings(db_path=db_path, **settings))
    with TestClient(app) as client:
        yield client


def sweep(client: TestClient) -> None:
    """Run one liveness sweep of the app behind ``client`` now."""
    client.portal.call(client.app.state.storage.sweep)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data`` (a model's identity in the registry)."""
    return hashlib.sha256(data).hexdigest()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def fake_clock() -> FakeClock:
    """A settable unix clock (see :class:`FakeClock`)."""
    return FakeClock()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session (skipped where it is not installed)."""
    reason = postgres.missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres.postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """The registry's database, once per backend: a SQLite file in ``tmp_path``, or a fresh
    database on the session's PostgreSQL server (its URL). Tests that take it run against
    both stores through the same code."""
    if request.param == "sqlite":
        yield tmp_path / "registry.db"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def live_registry(tmp_path: Path) -> Iterator[str]:
    """The URL of a REAL registry process on a free port (database in ``tmp_path``)."""
    with start_registry(tmp_path) as (url, _proc):
        yield url


__all__ = [
    "ENTRYPOINT",
    "OPERATOR_TOKEN",
    "ROOT",
    "FakeClock",
    "RegisteredNode",
    "auth",
    "create_group",
    "operator_token_file",
    "register_node",
    "registry_app",
    "registry_args",
    "registry_is_healthy",
    "sha256_hex",
    "start_registry",
    "sweep",
]
