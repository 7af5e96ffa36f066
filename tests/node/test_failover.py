"""Node agents given two registry URLs, with real registry and Flower processes: registry
processes A and B over one PostgreSQL (no single point of failure) run together, and A is
killed (-9) while the groups train. (Over SQLite a second process can only start on the
file after the first is gone: that restart is `tests/registry/test_restart.py`'s, and the
agents' failover is the same client code.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from mycelium import launch
from mycelium.client import RegistryClient, RegistryEndpoints
from mycelium.procs import free_port, wait_for
from tests.conftest import operator_token_file
from tests.node.test_integration import group_of, node_process
from tests.postgres import PgServer

pytestmark = pytest.mark.slow

QUIET = {"left", "migrated", "evicted", "dissolved", "group_failed"}
"""Events no failover may cause."""


BEAT_S = 1.0  # FAST_TIMERS' heartbeat interval


def _sweeping(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).headers.get("X-Registry-Sweeping") == "1"
    except httpx.HTTPError:
        return False


@contextmanager
def _registry(tmp_path: Path, db: str, name: str, port: int) -> Iterator[launch.RegistryProcess]:
    registry = launch.start_registry(
        db=db,
        log_path=tmp_path / f"registry-{name}.log",
        name=f"registry-{name}",
        port=port,
        node_ttl=5,
        group_ttl=15,
        operator_token_file=operator_token_file(tmp_path),
    )
    try:
        yield registry
    finally:
        registry.process.stop()


def test_two_registry_processes_over_postgresql_one_killed_while_groups_train(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Issue 23's network: registry processes A and B over one PostgreSQL, both running,
    agents given both URLs (A first), real Flower. A is killed (-9) while two groups train:
    their rounds go on through B, every agent's heartbeats reach B within two heartbeat
    intervals, B takes over the sweep, and a node started afterwards joins through B (into
    the wrong group on purpose) and migrates to its cluster's group through B. No node
    leaves, fails or is evicted because of the failover."""
    db = pg_server.create_database()
    ports = (free_port(), free_port())
    both = RegistryEndpoints(tuple(f"http://127.0.0.1:{port}" for port in ports))
    try:
        with ExitStack() as stack:
            a, b = (
                stack.enter_context(_registry(tmp_path, db, name, port))
                for name, port in zip("ab", ports, strict=True)
            )
            client = stack.enter_context(RegistryClient(both))
            stack.enter_context(node_process(tmp_path, str(both), "host0", 0, 0))
            stack.enter_context(node_process(tmp_path, str(both), "host1", 1, 1))
            g0 = wait_for(lambda: group_of(client, "host0"), timeout=90, what="host0 founds")
            g1 = wait_for(lambda: group_of(client, "host1"), timeout=90, what="host1 founds")
            assert g0 != g1, "different clusters must not share a group"
            before = wait_for(lambda: client.get_group(g0).round, timeout=90, what="a round")
            assert _sweeping(both.urls[0]) and not _sweeping(both.urls[1])

            a.process.kill()  # kill -9: no goodbye
            killed = time.time()

            def beats_reached_b() -> bool:
                nodes = {n.name: n.last_seen for n in client.list_nodes()}
                return all(nodes[name] > killed for name in ("host0", "host1"))

            wait_for(beats_reached_b, timeout=30, interval=0.1, what="heartbeats through B")
            moved_after = time.time() - killed
            assert client.base_url == both.urls[1]
            assert moved_after <= 2 * BEAT_S, f"heartbeats reached B {moved_after:.1f} s after"
            wait_for(lambda: _sweeping(both.urls[1]), timeout=30, what="B sweeps")
            wait_for(
                lambda: (client.get_group(g0).round or 0) >= before + 2,
                timeout=60,
                what="rounds reported through registry B",
            )

            stack.enter_context(node_process(tmp_path, str(both), "late1", 1, 3, join=g0))
            wait_for(lambda: group_of(client, "late1") == g0 or None, timeout=90, what="joined")
            wait_for(
                lambda: group_of(client, "late1") == g1 or None,
                timeout=120,
                what="migration through B to the cluster's group",
            )
            assert group_of(client, "host0") == g0 and group_of(client, "host1") == g1
            events = client.events(limit=1000)
            late = next(n.node_id for n in client.list_nodes() if n.name == "late1")
            assert [e.data.get("to_group_id") for e in events if e.type == "migrated"] == [g1]
            assert all(e.node_id == late for e in events if e.type == "migrated")
            kinds = {e.type for e in events}
            assert not kinds & (QUIET - {"migrated"}), kinds
    finally:
        pg_server.drop_database(db)
