"""Issue 24, item 2 as a scenario: the registry stopped (SIGSTOP) for 1.5 group TTLs while a
real group of real agents trains on loopback. Nothing fails, dissolves or leaves; the agents
heartbeat again at once; the requests the registry gets after it are counted.

The issue's case was a 60 s stop with ``--group-ttl 40``; here the same ratio, shortened:
``--node-ttl 5 --group-ttl 10``, stopped 15 s (``MYCELIUM_OUTAGE_S`` to lengthen it).
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from bench.faults_report import requests_answered as answered
from mycelium.api import GroupDetail
from mycelium.client import RegistryClient
from mycelium.procs import ManagedProcess, wait_for
from tests.conftest import start_registry
from tests.node.test_integration import group_of, node_process

pytestmark = pytest.mark.slow

NODE_TTL, GROUP_TTL = 5.0, 10.0
OUTAGE_S = float(os.environ.get("MYCELIUM_OUTAGE_S", 1.5 * GROUP_TTL))
WINDOW_S = float(os.environ.get("MYCELIUM_WINDOW_S", GROUP_TTL + 2))  # counted before, after
HEARTBEAT_S = 1.0  # FAST_TIMERS
QUIET = {"group_failed", "dissolved", "evicted", "left", "migrated", "joined", "group_created"}


def requests_answered(url: str) -> int:
    """Answers the registry gave so far, by its own /metrics (scrapes not counted)."""
    return answered(httpx.get(f"{url}/metrics", timeout=5).text)


def answered_within(url: str, start: float, seconds: float) -> int:
    """Requests answered from ``start`` (wall time, now or just past) for ``seconds``."""
    first = requests_answered(url)
    end = start + seconds
    wait_for(lambda: time.time() >= end or None, timeout=seconds + 30, what=f"{seconds} s")
    return requests_answered(url) - first


class Counted:
    """The test's own reads of the group, counted so the figure leaves them out."""

    def __init__(self, client: RegistryClient, group_id: int) -> None:
        self.client, self.group_id, self.calls = client, group_id, 0

    def group(self) -> GroupDetail:
        self.calls += 1
        return self.client.get_group(self.group_id)


def stopped(proc: ManagedProcess, seconds: float) -> float:
    """SIGSTOP the registry for ``seconds`` (the fault itself, not a wait for readiness);
    returns the wall time it resumed."""
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    return time.time()


def test_a_stopped_registry_fails_no_group_and_loses_no_member(tmp_path: Path) -> None:
    with ExitStack() as stack:
        url, registry = stack.enter_context(
            start_registry(tmp_path, node_ttl=NODE_TTL, group_ttl=GROUP_TTL)
        )
        client = RegistryClient(url, timeout=5.0)
        stack.callback(client.close)
        stack.enter_context(node_process(tmp_path, url, "host", 0, 0))
        gid = wait_for(lambda: group_of(client, "host"), timeout=120, what="host founds")
        stack.enter_context(node_process(tmp_path, url, "member", 0, 2, join=gid))
        wait_for(lambda: group_of(client, "member") == gid or None, timeout=120, what="join")
        wait_for(lambda: (client.get_group(gid).round or 0) >= 2, timeout=120, what="2 rounds")
        since = client.events(limit=1000)[-1].id
        usual = answered_within(url, time.time(), WINDOW_S)

        at_stop = requests_answered(url)
        resumed = stopped(registry, OUTAGE_S)
        mine = Counted(client, gid)
        back = wait_for(
            lambda: all(m.last_seen >= resumed for m in mine.group().members) or None,
            timeout=2 * HEARTBEAT_S + 5.0,  # + the client's timeout a stopped call ran into
            interval=0.05,
            what="both members heartbeat again",
        )
        heard_after = time.time() - resumed
        round_at_resume = mine.group().round or 0
        wait_for(
            lambda: (mine.group().round or 0) > round_at_resume or None,
            timeout=GROUP_TTL + 30,
            interval=0.5,
            what="a round after the outage",
        )
        end = resumed + WINDOW_S
        wait_for(lambda: time.time() >= end or None, timeout=WINDOW_S + 30, what="the window")
        after = requests_answered(url) - at_stop - mine.calls

        events = client.events(since=since, limit=1000)
        assert back and not [e for e in events if e.type in QUIET], events
        assert [e.type for e in events].count("registry_resumed") == 1, events
        group = client.get_group(gid)
        assert group.status == "active" and group.alive and group.num_members == 2
        print(
            f"stopped {OUTAGE_S:.0f} s; members heard {heard_after:.2f} s after SIGCONT; "
            f"requests answered in {WINDOW_S:.0f} s: {usual} before the stop, {after} after"
        )
        assert after <= 2 * usual + 10, (usual, after)  # no storm of retries
