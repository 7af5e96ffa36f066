"""The real registry process (uvicorn subprocess on a free port) exercised over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mycelium.client import RegistryClient
from mycelium.launch import registry_command
from mycelium.procs import free_port
from tests.conftest import (
    ROOT,
    RegisteredNode,
    create_group,
    register_node,
    start_registry,
)


def test_registry_over_http_with_concurrent_joins(tmp_path: Path) -> None:
    with start_registry(tmp_path) as (url, _proc):
        assert httpx.get(f"{url}/docs", timeout=5).status_code == 200
        group, coordinator = create_group(url, max_capacity=10)
        nodes = [register_node(url, name=f"n{i}") for i in range(50)]

        def join(node: RegisteredNode) -> int:
            r = httpx.post(
                f"{url}/groups/{group.group_id}/join",
                json={"node_id": node.node_id},
                headers={"Authorization": f"Bearer {node.creds.token}"},
                timeout=10,
            )
            return r.status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(join, nodes))
        assert codes.count(200) == 10 and codes.count(409) == 40
        members = nodes[0].client.list_nodes(group_id=group.group_id)
        assert len(members) == 10
        member = next(n for n in nodes if n.node_id == members[0].node_id)
        member.client.heartbeat(member.node_id, group_id=group.group_id, accuracy=0.9)
        coordinator.put_model(group.group_id, b"\x00" * 100_000)
        assert member.client.get_model(group.group_id) == b"\x00" * 100_000
        too_big = httpx.post(f"{url}/nodes", content=b"{" + b" " * (2 * 1024 * 1024), timeout=10)
        assert too_big.status_code == 413
        for n in nodes:
            n.client.close()


def test_data_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    with start_registry(tmp_path, db_path=db, name="first") as (url, proc):
        node = register_node(url)
        group, coordinator = create_group(url)
        node.client.join_group(group.group_id, node.node_id)
        coordinator.put_model(group.group_id, b"weights")
        proc.kill()  # SIGKILL: no shutdown, no final flush
        assert proc.returncode() == -9
    with start_registry(tmp_path, db_path=db, name="second") as (url, _proc):
        client = RegistryClient(url, token=node.creds.token)
        assert client.get_node(node.node_id).group_id == group.group_id
        assert client.heartbeat(node.node_id, group_id=group.group_id).alive is True
        assert client.get_model(group.group_id) == b"weights"
        assert [e.type for e in client.events()] == [
            "node_registered",
            "group_created",
            "joined",
        ]
        client.close()
        node.client.close()


def test_registry_cli_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = registry_command(port=port, db=tmp_path / "r.db")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "already in use" in done.stderr


def test_registry_cli_refuses_an_unusable_database(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cmd = registry_command(port=free_port(), db=blocker / "r.db")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "not usable" in done.stderr


def test_registry_imports_neither_torch_nor_flwr() -> None:
    code = (
        "import sys, pathlib, registry; "
        "registry.create_app(registry.Settings(db_path=pathlib.Path('unused.db'))); "
        "heavy = [m for m in ('torch', 'flwr') if m in sys.modules]; "
        "print(','.join(heavy) or 'clean')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"
