"""Node agents given two registry URLs, with real registry and Flower processes: the first
registry is killed (-9) while the group trains and a second one takes over the same data.

Two registry processes cannot share a SQLite file at once, so registry B is started on A's
file after A is killed, as a second process over one PostgreSQL would already be running:
what is tested is the clients' side (node agent, group host, ServerApp) of issue 23.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from mycelium import launch
from mycelium.client import RegistryClient, RegistryEndpoints
from mycelium.procs import free_port, wait_for
from tests.conftest import operator_token_file
from tests.node.test_integration import group_of, node_process

pytestmark = pytest.mark.slow

QUIET = {"left", "migrated", "evicted", "dissolved", "group_failed"}
"""Events no failover may cause."""


def test_nodes_keep_training_when_their_registry_dies_and_join_through_the_next(
    tmp_path: Path,
) -> None:
    db = tmp_path / "registry.db"
    ports = (free_port(), free_port())
    both = RegistryEndpoints(tuple(f"http://127.0.0.1:{port}" for port in ports))

    def registry(index: int) -> launch.RegistryProcess:
        return launch.start_registry(
            db=db,
            log_path=tmp_path / f"registry-{'ab'[index]}.log",
            name=f"registry-{'ab'[index]}",
            port=ports[index],
            node_ttl=5,
            group_ttl=15,
            operator_token_file=operator_token_file(tmp_path),
        )

    with ExitStack() as stack:
        first = registry(0)
        stack.callback(first.process.stop)
        client = stack.enter_context(RegistryClient(both))
        stack.enter_context(node_process(tmp_path, str(both), "host", 0, 0))
        group = wait_for(lambda: group_of(client, "host"), timeout=90, what="host founds")
        before = wait_for(lambda: client.get_group(group).round, timeout=90, what="a round")

        first.process.kill()  # kill -9: no goodbye, no last commit beyond the WAL's
        second = registry(1)
        stack.callback(second.process.stop)
        wait_for(
            lambda: (client.get_group(group).round or 0) >= before + 2,
            timeout=60,
            what="rounds reported through registry B",
        )
        assert client.base_url == both.urls[1]
        assert group_of(client, "host") == group  # its heartbeats reach B: alive, same group

        stack.enter_context(node_process(tmp_path, str(both), "late", 0, 2))
        wait_for(lambda: group_of(client, "late") == group or None, timeout=90, what="late joins")
        assert group_of(client, "host") == group
        kinds = {e.type for e in client.events(limit=1000)}
        assert not kinds & QUIET, kinds
