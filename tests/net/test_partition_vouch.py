"""Issue 24, item 3 as a scenario: a group's host cut from the registry for longer than the
group TTL, while its member reaches both (namespaces, HTTPS, TLS groups). The member's
heartbeats, naming the group with rounds that advance, keep it: it is never marked failed,
nobody leaves, and the host reports again once the partition heals."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from mycelium.lab.faults import Faults, unavailable_reason
from mycelium.lab.netns import Network
from mycelium.lab.stack import agent_in, https_registry
from mycelium.procs import wait_for
from tests.net.conftest import needs_nginx

pytestmark = [pytest.mark.slow, needs_nginx]

NODE_TTL, GROUP_TTL = 5.0, 25.0  # the case: 45 s cut with --group-ttl 30
CUT_S = 1.5 * GROUP_TTL
QUIET = {"group_failed", "dissolved", "evicted", "left", "migrated"}


def test_a_host_cut_from_the_registry_keeps_its_group(network: Network, tmp_path: Path) -> None:
    if reason := unavailable_reason():
        pytest.skip(f"lab faults unavailable: {reason}")
    with ExitStack() as stack:
        view, _, _ = stack.enter_context(
            https_registry(network, tmp_path, node_ttl=NODE_TTL, group_ttl=GROUP_TTL)
        )
        stack.enter_context(
            agent_in(network, "hostA", tmp_path, view, name="a0", cluster=0, index=0)
        )
        g = wait_for(lambda: view.group_of("a0"), timeout=180, interval=1, what="a0 founds")
        stack.enter_context(
            agent_in(network, "hostB", tmp_path, view, name="b0", cluster=0, index=1)
        )
        wait_for(lambda: view.group_of("b0") == g or None, timeout=180, interval=1, what="b0 joins")
        wait_for(lambda: view.full_rounds(g, 2), timeout=180, interval=1, what="a round of 2")
        since = view.events()[-1].id
        lab = stack.enter_context(Faults(network, tmp_path))
        cut_at = time.time()
        with lab.partition("hostA", "reg"):
            first_round = view.node_round("b0") or 0
            end = cut_at + CUT_S
            wait_for(lambda: time.time() >= end or None, timeout=CUT_S + 30, what="the cut")
            group = view.group(g)
            assert group.status == "active" and group.alive, group
            silent = time.time() - group.last_report
            assert silent > GROUP_TTL  # the host is silent: its member kept the group
            last_round = view.node_round("b0") or 0
        wait_for(
            lambda: view.group(g).last_report > cut_at + CUT_S or None,
            timeout=60,
            interval=1,
            what="the host reports again",
        )
        group = view.group(g)
        assert group.status == "active" and view.group_of("b0") == g
        happened = [e.type for e in view.events(since)]
        assert not QUIET & set(happened), happened
        print(
            f"host silent {silent:.1f} s (group TTL {GROUP_TTL:.0f}); member's rounds during "
            f"the cut {first_round} -> {last_round}; events {sorted(set(happened))}"
        )
