"""The network across machines, each namespace standing for one host (issue 11).

Registry on HTTPS in ``reg``; a node in hostA founds a group; nodes of the same cluster in
hostB and hostC discover and join it over TLS; rounds advance with all three; a node of
another cluster in hostC founds its own group; kill -9 of hostA's agent makes the others
re-home. Along the way: every listener another host can reach is TLS (plain HTTP gets no
answer), nobody advertises loopback, and the registry refuses plain HTTP.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from mycelium.lab.netns import Network
from mycelium.lab.stack import agent_in, crash, https_registry
from mycelium.net.addresses import split_host_port
from mycelium.net.certs import fingerprint
from mycelium.procs import wait_for
from tests.net.conftest import needs_nginx
from tests.net.hosts import (
    assert_all_public_listeners_are_tls,
    assert_nothing_advertises_loopback,
    supernode_root_certificates,
)

pytestmark = [pytest.mark.slow, needs_nginx]
logger = logging.getLogger(__name__)


def test_groups_form_train_and_heal_across_hosts_over_tls(network: Network, tmp_path: Path) -> None:
    with ExitStack() as stack:
        # group_ttl above a founding's duration under load (the group has no member until
        # its founder's run is up and it joins).
        view, _, _ = stack.enter_context(https_registry(network, tmp_path, group_ttl=60))
        a0 = stack.enter_context(
            agent_in(network, "hostA", tmp_path, view, name="a0", cluster=0, index=0)
        )
        g = wait_for(lambda: view.group_of("a0"), timeout=180, interval=1, what="a0 founds")
        group = view.group(g)
        assert split_host_port(group.fleet_address)[0] == network["hostA"].address
        assert group.certificate, "a group off loopback publishes its certificate"
        presented = network.probe("hostC", "cert", group.fleet_address)
        assert presented == {"sha256": fingerprint(group.certificate)}
        wait_for(lambda: view.group(g).round, timeout=180, interval=1, what="first round")

        started_b = time.monotonic()
        b0 = stack.enter_context(
            agent_in(network, "hostB", tmp_path, view, name="b0", cluster=0, index=1)
        )
        c0 = stack.enter_context(
            agent_in(network, "hostC", tmp_path, view, name="c0", cluster=0, index=2)
        )
        for name, proc in (("b0", b0), ("c0", c0)):
            joined = wait_for(
                lambda n=name: view.group_of(n), timeout=180, interval=1, what=f"{name} placed"
            )
            assert joined == g, proc.read_log()[-3000:]
        wait_for(lambda: view.node_round("b0"), timeout=180, interval=1, what="b0 trains")
        logger.warning("b0 start to its first round: %.1f s", time.monotonic() - started_b)
        wait_for(
            lambda: view.full_rounds(g, 3), timeout=180, interval=1, what="a round with 3 nodes"
        )
        # b0's SuperNode trusts exactly the certificate the registry published.
        root = supernode_root_certificates(b0)
        assert root is not None and fingerprint(root.read_text()) == presented["sha256"]

        c1 = stack.enter_context(
            agent_in(network, "hostC", tmp_path, view, name="c1", cluster=1, index=3)
        )
        g1 = wait_for(lambda: view.group_of("c1"), timeout=180, interval=1, what="c1 placed")
        assert g1 != g, "another cluster founds its own group: " + c1.read_log()[-3000:]
        assert split_host_port(view.group(g1).fleet_address)[0] == network["hostC"].address

        assert_nothing_advertises_loopback(view)
        checked = assert_all_public_listeners_are_tls(network)
        assert checked >= 3, "registry + two SuperLinks at least"

        crash(a0)

        def rehomed() -> dict[str, int] | None:
            """Both cluster-0 members in a live group other than the crashed one, and
            that group has completed a round."""
            homes = {n: view.group_of(n) for n in ("b0", "c0")}
            if any(h in (None, g) for h in homes.values()):
                return None
            return homes if all(view.group(h).round for h in homes.values()) else None

        homes = wait_for(rehomed, timeout=300, interval=2, what="b0 and c0 re-home and train")
        assert g1 not in homes.values(), f"cluster 0 joined cluster 1's group: {homes}"
        assert b0.is_running() and c0.is_running() and c1.is_running()
        assert_nothing_advertises_loopback(view)
        assert assert_all_public_listeners_are_tls(network) >= 3, "registry + two SuperLinks"
