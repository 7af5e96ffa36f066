"""Node agents as real processes against the real registry and real Flower processes."""

from __future__ import annotations

import os
import signal
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest

from mycelium.api import NodePublic
from mycelium.client import RegistryClient
from mycelium.launch import FAST_TIMERS, agent_process
from mycelium.procs import ManagedProcess, descendant_pids, wait_for
from tests.conftest import start_registry

pytestmark = pytest.mark.slow


def node_process(
    tmp_path: Path, url: str, name: str, cluster: int, index: int, join: int | None = None
) -> AbstractContextManager[ManagedProcess]:
    """A real node agent with fast timers (rotate digits, 2 clusters, 1/4 of the data)."""
    return agent_process(
        tmp_path,
        name=name,
        stop_timeout=20,
        registry_url=url,
        scenario="rotate",
        clusters=2,
        cluster=cluster,
        partition=f"{index}/4",
        warmup_epochs=20,
        log_level="info",
        join=join,
        **FAST_TIMERS,
    )


def node_named(client: RegistryClient, name: str) -> NodePublic | None:
    return next((n for n in client.list_nodes() if n.name == name), None)


def group_of(client: RegistryClient, name: str) -> int | None:
    node = node_named(client, name)
    return node.group_id if node and node.alive else None


def crash(proc: ManagedProcess) -> None:
    """kill -9 an agent and everything it started, as a machine crash would."""
    assert proc.pid is not None
    victims = [proc.pid, *descendant_pids(proc.pid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_same_cluster_shares_a_group_and_members_rehome_when_the_host_dies(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        url, _ = stack.enter_context(start_registry(tmp_path, node_ttl=5, group_ttl=15))
        client = RegistryClient(url)
        stack.callback(client.close)
        host = stack.enter_context(node_process(tmp_path, url, "host", 0, 0))
        first = wait_for(lambda: group_of(client, "host"), timeout=90, what="host founds")
        wait_for(lambda: client.get_group(first).round, timeout=90, what="first round")

        member = stack.enter_context(node_process(tmp_path, url, "member", 0, 2))
        joined = wait_for(lambda: group_of(client, "member"), timeout=90, what="member placed")
        assert joined == first, member.read_log()

        crash(host)
        rehomed = wait_for(
            lambda: (g := group_of(client, "member")) not in (None, first) and g,
            timeout=120,
            what="member re-homes",
        )
        wait_for(
            lambda: client.get_group(rehomed).round,
            timeout=90,
            what="a round in the re-formed group",
        )
        assert "founded group" in member.read_log()
        assert member.is_running()


def test_a_node_in_the_wrong_group_migrates_to_its_own_cluster(tmp_path: Path) -> None:
    with ExitStack() as stack:
        url, _ = stack.enter_context(start_registry(tmp_path, node_ttl=5, group_ttl=30))
        client = RegistryClient(url)
        stack.callback(client.close)
        stack.enter_context(node_process(tmp_path, url, "a0", 0, 0))
        g0 = wait_for(lambda: group_of(client, "a0"), timeout=90, what="a0 founds")
        stack.enter_context(node_process(tmp_path, url, "b1", 1, 1))
        g1 = wait_for(lambda: group_of(client, "b1"), timeout=90, what="b1 placed")
        assert g1 != g0, "different clusters must not share a group"

        lost = stack.enter_context(node_process(tmp_path, url, "c1", 1, 3, join=g0))
        wait_for(lambda: group_of(client, "c1") == g0 or None, timeout=90, what="forced join")
        wait_for(
            lambda: group_of(client, "c1") == g1 or None,
            timeout=120,
            what="migration to the cluster's group",
        )
        moved = [e for e in client.events(limit=500) if e.type == "migrated"]
        assert moved and moved[-1].data["to_group_id"] == g1
        assert moved[-1].data["expected_gain"] > 0.05, lost.read_log()
