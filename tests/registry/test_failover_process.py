"""RegistryClient failover against a REAL registry process: a dead URL before it, and a TCP
proxy in front of it that passes requests on (the registry applies them) and drops the
answers, as a registry that dies after its commit would."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mycelium.client import RegistryClient, RegistryEndpoints
from mycelium.procs import free_port
from tests.conftest import OPERATOR_TOKEN, register_node, start_registry


class LossyProxy:
    """Forwards each HTTP request (one per connection) to ``upstream`` and, while
    ``lose`` is above zero, closes the client's connection instead of answering."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.lose = 0
        self.lost = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)  # accept() wakes up to see _stop
        self._stop = threading.Event()
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        request = _read_request(conn)
        if request is None:
            return
        with socket.create_connection(self.upstream, timeout=10) as up:
            up.sendall(request)
            answer = b"".join(iter(lambda: up.recv(65536), b""))
        if self.lose > 0:
            self.lose -= 1
            self.lost += 1
            return  # the registry committed; its answer is lost with the connection
        conn.sendall(answer)

    @contextmanager
    def running(self) -> Iterator[LossyProxy]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)
            self._server.close()


def _read_request(conn: socket.socket) -> bytes | None:
    """One whole request, re-headed ``Connection: close`` so the registry ends the answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    sizes = [
        line.split(b":", 1)[1] for line in lines if line.lower().startswith(b"content-length:")
    ]
    length = int(sizes[0]) if sizes else 0
    while len(body) < length:
        body += conn.recv(65536)
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


def test_a_client_skips_a_dead_registry_and_keeps_to_the_live_one(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with start_registry(tmp_path) as (live, _):
        node = register_node(live)
        with RegistryClient(RegistryEndpoints((dead, live)), token=node.creds.token) as client:
            assert client.get_node(node.node_id).name == "node"
            assert client.base_url == live
            for _ in range(3):
                client.heartbeat(node.node_id, group_id=None)
            assert client.base_url == live


def test_writes_whose_answers_are_lost_apply_once(tmp_path: Path) -> None:
    with start_registry(tmp_path) as (live, _):
        port = int(live.rsplit(":", 1)[1])
        with LossyProxy(("127.0.0.1", port)).running() as proxy:
            both = RegistryEndpoints((proxy.url, live))
            operator = RegistryClient(both, token=OPERATOR_TOKEN)
            proxy.lose = 1
            group = operator.create_group(name="g", fleet_address="127.0.0.1:9092")
            assert proxy.lost == 1 and operator.base_url == live
            host = RegistryClient(both, token=group.group_token)
            proxy.lose = 1
            host.report_round(
                group.group_id, round=1, accuracy=0.5, loss=1.0, num_nodes=1, num_examples=3
            )
            member = RegistryClient(both)
            proxy.lose = 1
            creds = member.register_node(name="m", num_samples=3)
            joiner = RegistryClient(both, token=creds.token)  # starts at the proxy again
            proxy.lose = 1
            joiner.join_group(group.group_id, creds.node_id)
            assert proxy.lost == 4
            reader = RegistryClient(live)
            assert [g.group_id for g in reader.list_groups()] == [group.group_id]
            assert [n.node_id for n in reader.list_nodes()] == [creds.node_id]
            assert [r.round for r in reader.get_group(group.group_id).rounds] == [1]
            assert reader.get_node(creds.node_id).group_id == group.group_id
            for client in (operator, host, member, joiner, reader):
                client.close()
