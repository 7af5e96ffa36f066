"""A registry killed with -9 while clients hold keep-alive connections restarts on its port
at once (issue 9, item 4)."""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path

import pytest

from mycelium import launch
from mycelium.client import RegistryClient
from mycelium.procs import bind_socket, free_port, port_is_free

CLIENTS = 8


def _plain_bind_fails(port: int) -> bool:
    """True when binding ``port`` WITHOUT SO_REUSEADDR fails (what the old check did)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


def test_kill_9_with_keep_alive_clients_then_restart_on_the_same_port(
    tmp_path: Path, database: Path | str
) -> None:
    db, port = database, free_port()
    first = launch.start_registry(db=db, log_path=tmp_path / "first.log", port=port)
    clients = [RegistryClient(first.url) for _ in range(CLIENTS)]
    try:
        nodes = [c.register_node(name=f"n{i}", num_samples=1) for i, c in enumerate(clients)]
        for client, node in zip(clients, nodes, strict=True):
            client.heartbeat(node.node_id, group_id=None)  # the connections stay open
        first.process.kill()
        killed_at = time.monotonic()
        # The kill leaves the port with connections that are not listening: a bind without
        # SO_REUSEADDR (the old start-up check) is refused, so this test can fail.
        assert _plain_bind_fails(port)
        restarted_after = time.monotonic() - killed_at
        second = launch.start_registry(db=db, log_path=tmp_path / "second.log", port=port)
        try:
            assert second.url == first.url
            # The same clients (their old connections dead) talk to the new process.
            for client, node in zip(clients, nodes, strict=True):
                assert client.heartbeat(node.node_id, group_id=None).alive is True
        finally:
            second.process.stop()
    finally:
        first.process.stop()
        for client in clients:
            client.close()
    # The restart was started within a second of the kill and came up on the same port
    # (how long Python takes to import and answer /health depends on the machine's load).
    assert restarted_after < 1.0


def test_a_live_listener_still_holds_its_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(OSError):
            bind_socket(port)
