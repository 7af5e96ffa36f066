"""Shared test factories: a real registry process, in-process apps, registered nodes/groups."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from mycelium import launch
from mycelium.client import GroupCredentials, NodeCredentials, RegistryClient
from mycelium.procs import ManagedProcess, free_port, wait_for

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


def registry_is_healthy(url: str) -> bool:
    response = httpx.get(f"{url}/health", timeout=1.0)
    return response.status_code == 200 and response.json().get("status") == "ok"


def wait_healthy(url: str, proc: ManagedProcess, timeout: float = 30.0) -> None:
    """Poll /health until it answers; fail at once (with the log) if the process died."""

    def ready() -> str | None:
        if not proc.is_running():
            return "exited"
        return "ok" if registry_is_healthy(url) else None

    try:
        state = wait_for(ready, timeout=timeout, interval=0.05, what=f"registry at {url}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{proc.read_log()}") from None
    if state == "exited":
        raise AssertionError(f"registry exited {proc.returncode()}:\n{proc.read_log()}")


@contextmanager
def start_registry(
    tmp_path: Path,
    *,
    db_path: Path | None = None,
    node_ttl: float | None = None,
    group_ttl: float | None = None,
    max_model_mb: float | None = None,
    name: str = "registry",
) -> Iterator[tuple[str, ManagedProcess]]:
    """Run the REAL registry on a free port; yield ``(url, process)``, stop it on exit.

    The database defaults to ``tmp_path / "registry.db"``; the log goes to
    ``tmp_path / f"{name}.log"``.
    """
    port = free_port()
    db = db_path if db_path is not None else tmp_path / "registry.db"
    args = registry_args(
        port, db, node_ttl=node_ttl, group_ttl=group_ttl, max_model_mb=max_model_mb
    )
    proc = ManagedProcess(name, args, log_path=tmp_path / f"{name}.log", cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        proc.start()
        wait_healthy(url, proc)
        yield url, proc
    finally:
        proc.stop()


@dataclass(frozen=True)
class RegisteredNode:
    creds: NodeCredentials
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
) -> tuple[GroupCredentials, RegistryClient]:
    """Create a group as an operator; the returned client carries the group token."""
    creds = RegistryClient(url, http=http).create_group(
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
def registry_app(db_path: Path, **settings: Any) -> Iterator[TestClient]:
    """The registry app in-process (lifespan run) behind a starlette TestClient.

    ``settings`` are :class:`registry.Settings` fields; the sweeper only runs when a test
    calls :func:`sweep` unless ``sweep_interval`` is given.
    """
    import registry

    settings.setdefault("sweep_interval", 3600.0)
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
