"""The dashboard in a real headless Chromium against the real registry (uvicorn subprocess).

A small network is made through the API; the page must show its groups and nodes, a click
on a node must open its panel, and a migration made through the API while the page is open
must appear (feed, map, panel, table) within seconds and without a reload.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mycelium.client import RegistryClient
from mycelium.procs import free_port
from tests.conftest import create_group, register_node, start_registry
from tests.dashboard.browser import (
    chromium,
    click_node,
    console_problems,
    missing_browser,
    save_screenshot,
    until,
)

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))

LIVE_WITHIN_S = 10.0
XSS_NAME = '<img src=x onerror="window.__xss=1">'


@dataclass
class Network:
    groups: dict[str, tuple[int, RegistryClient]]
    nodes: dict[str, tuple[int, RegistryClient, int | None]]
    secrets: list[str]


def build_network(url: str, http: httpx.Client | None = None) -> Network:
    """Two groups with a few rounds each, four members, one node without a group, and an
    invite-only group (its invite code is a secret the page must not show)."""
    groups: dict[str, tuple[int, RegistryClient]] = {}
    secrets: list[str] = []
    for name, accuracies in (("upright", (0.42, 0.61, 0.74, 0.81)), ("rotated", (0.35, 0.5))):
        creds, client = create_group(url, name=name, max_capacity=4, http=http)
        secrets.append(creds.group_token)
        for i, acc in enumerate(accuracies, start=1):
            client.report_round(
                creds.group_id, round=i, accuracy=acc, loss=1 - acc, num_nodes=2, num_examples=90
            )
        groups[name] = (creds.group_id, client)
    invite, _ = create_group(url, name="private", join_policy="invite-only", http=http)
    secrets += [invite.group_token, str(invite.invite_code)]
    nodes: dict[str, tuple[int, RegistryClient, int | None]] = {}
    plan = [("alice", "upright"), ("bob", "upright"), ("carol", "rotated"), ("dave", "upright")]
    for name, group in [*plan, (XSS_NAME, None)]:
        node = register_node(url, name=name, http=http)
        secrets.append(node.creds.token)
        gid = groups[group][0] if group else None
        if gid is not None:
            node.client.join_group(gid, node.node_id)
            node.client.heartbeat(
                node.node_id, group_id=gid, accuracy=0.7, round=2, personal_accuracy=0.83
            )
        nodes[name] = (node.node_id, node.client, gid)
    return Network(groups=groups, nodes=nodes, secrets=secrets)


def map_members(driver: Any) -> dict[str, str | None]:
    """Node name -> the map's parent (group) element id, as Cytoscape holds them."""
    pairs = driver.execute_script(
        "const cy = window.myceliumDashboard.cy;"
        "return cy.nodes('.member').map(n => [n.data('label'), n.data('parent') || null]);"
    )
    return dict(pairs)


def text_of(driver: Any, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').innerText;")


def feed_ids(driver: Any) -> list[int]:
    """The ids of the event list's rows, top (newest) first."""
    ids = driver.execute_script(
        "return [...document.querySelectorAll('#feed li')].map(li => Number(li.dataset.id));"
    )
    return list(ids)


def test_dashboard_shows_the_network_and_a_live_migration(tmp_path: Path) -> None:
    with start_registry(tmp_path) as (url, _proc), chromium() as driver:
        net = build_network(url)
        log = httpx.get(f"{url}/events", params={"limit": 1000}).json()["events"]
        driver.get(f"{url}/")  # redirects to the dashboard
        assert driver.current_url == f"{url}/dashboard"
        until(driver, "document.querySelectorAll('#groups tbody tr').length === 3",
              timeout=15, what="three group rows")  # fmt: skip
        # Opened from the snapshot, then the stream after its last event (not from id 0);
        # the event list is the log, newest first, each event once.
        until(driver, "window.myceliumDashboard.model.live", timeout=10, what="caught up")
        stream = driver.execute_script("return window.myceliumDashboard.streamUrl()")
        assert stream == f"{url}/events/stream?after={log[-1]['id']}", stream
        assert feed_ids(driver) == [e["id"] for e in reversed(log)]
        groups_text = text_of(driver, "groups")
        assert "upright #1" in groups_text and "3 / 4" in groups_text, groups_text
        assert "rotated #2" in groups_text and "1 / 4" in groups_text, groups_text
        until(driver, "document.querySelectorAll('#groups td.curve canvas').length === 3",
              timeout=10, what="an accuracy curve per group")  # fmt: skip

        gid = {name: f"g{g[0]}" for name, g in net.groups.items()}
        members = map_members(driver)
        assert members == {
            "alice": gid["upright"], "bob": gid["upright"], "dave": gid["upright"],
            "carol": gid["rotated"], XSS_NAME: None,
        }, members  # fmt: skip
        assert driver.execute_script("return window.__xss === undefined")
        assert XSS_NAME in text_of(driver, "feed")  # shown as text, not run

        dave_id, dave, _ = net.nodes["dave"]
        click_node(driver, dave_id)
        panel = until(driver, "document.getElementById('node-detail').innerText.includes('dave')"
                      " && document.getElementById('node-detail').innerText",
                      timeout=5, what="dave's panel")  # fmt: skip
        assert "upright (#1)" in panel and "joined upright (#1)" in panel, panel
        assert "personal\n0.830" in panel or "personal\t0.830" in panel, panel

        driver.execute_script("window.__sameDocument = true;")
        moved_at = time.monotonic()
        dave.migrate(
            dave_id, to_group_id=net.groups["rotated"][0], reason="scores better on own data",
            expected_gain=0.25,
        )  # fmt: skip
        until(driver, "document.querySelector('#feed li[data-type=migrated]') !== null",
              timeout=LIVE_WITHIN_S, what="the migration in the event feed")  # fmt: skip
        seen_after = time.monotonic() - moved_at
        until(driver, f"window.myceliumDashboard.cy.getElementById('n{dave_id}')"
              f".data('parent') === '{gid['rotated']}'",
              timeout=LIVE_WITHIN_S, what="dave drawn inside the rotated group")  # fmt: skip
        until(driver, "document.getElementById('groups').innerText.includes('2 / 4')",
              timeout=LIVE_WITHIN_S, what="member counts updated")  # fmt: skip
        assert driver.execute_script("return window.__sameDocument === true"), "page reloaded"

        feed = driver.execute_script(
            "return document.querySelector('#feed li[data-type=migrated]').innerText"
        )
        assert "dave migrated upright (#1) → rotated (#2), gain +0.250" in feed, feed
        panel = text_of(driver, "node-detail")
        assert "moved upright (#1) → rotated (#2)" in panel and "+0.250" in panel, panel
        assert "scores better on own data" in panel, panel
        assert driver.execute_script(
            "return window.myceliumDashboard.cy.edges('.move').length"
        ) == 1  # fmt: skip
        assert feed_ids(driver) == [log[-1]["id"] + 1] + [e["id"] for e in reversed(log)]
        summary = text_of(driver, "summary")
        assert "1 migration" in summary and f"last event #{log[-1]['id'] + 1}" in summary

        shot = save_screenshot(driver, _screenshot_dir(tmp_path) / "dashboard.png")
        assert shot.stat().st_size > 20_000
        page = driver.page_source
        assert not [s for s in net.secrets if s in page]
        assert console_problems(driver) == []
        print(f"migration seen in the browser {seen_after:.2f} s after the API call; {shot}")


def test_dashboard_over_https(tmp_path: Path) -> None:
    """Served over TLS, the page loads every file and its stream (relative URLs only)."""
    from tests.dashboard.tls import serve_registry_tls, trusting

    with (
        serve_registry_tls(tmp_path) as (url, cert),
        httpx.Client(verify=trusting(cert), timeout=5.0) as http,
        chromium(extra_flags=("--ignore-certificate-errors",)) as driver,
    ):
        build_network(url, http)
        driver.get(f"{url}/dashboard")
        until(driver, "document.querySelectorAll('#groups tbody tr').length === 3",
              timeout=15, what="three group rows over https")  # fmt: skip
        assert driver.execute_script("return location.protocol") == "https:"
        until(driver, "document.getElementById('connection').textContent === 'live'",
              timeout=5, what="the stream connected")  # fmt: skip
        assert console_problems(driver) == []


def _screenshot_dir(tmp_path: Path) -> Path:
    """Screenshots go to MYCELIUM_SCREENSHOT_DIR when set (to keep them), else tmp_path."""
    kept = os.environ.get("MYCELIUM_SCREENSHOT_DIR")
    return Path(kept).resolve() if kept else tmp_path


def test_dashboard_shows_self_preservation(tmp_path: Path) -> None:
    """Four nodes go silent at once (node TTL 1 s): a banner while the registry holds their
    expiry, gone once they beat again; /health and /metrics say the same."""
    with start_registry(tmp_path, node_ttl=1.0) as (url, _proc), chromium() as driver:
        nodes = [register_node(url, name=f"n{i}") for i in range(4)]
        driver.get(f"{url}/dashboard")
        until(driver, "document.getElementById('connection').textContent === 'live'",
              timeout=10, what="the stream connected")  # fmt: skip
        banner = "document.getElementById('preservation')"
        # Hidden while they beat (on a busy machine the page may load after they first
        # went silent, so beat once and wait for the banner to be hidden, not assert it).
        for node in nodes:
            node.client.heartbeat(node.node_id, group_id=None)
        until(driver, f"{banner}.hidden", timeout=LIVE_WITHIN_S, what="no banner while they beat")
        text = until(driver, f"!{banner}.hidden && {banner}.innerText", timeout=LIVE_WITHIN_S,
                     what="the self-preservation banner")  # fmt: skip
        # It starts at the first sweep that sees 2 or more lost: on a busy machine the four
        # beats (and so their silences) may straddle a sweep.
        silent = re.search(r"(\d) of 4 nodes went silent", text)
        assert silent is not None and int(silent.group(1)) >= 2, text
        assert httpx.get(f"{url}/health").json()["self_preservation"] is True
        assert "mycelium_self_preservation 1.0" in httpx.get(f"{url}/metrics").text
        for node in nodes:
            node.client.heartbeat(node.node_id, group_id=None)
        until(driver, f"{banner}.hidden", timeout=LIVE_WITHIN_S, what="the banner gone")
        assert httpx.get(f"{url}/health").json()["self_preservation"] is False
        assert console_problems(driver) == []


def build_large_network(url: str) -> dict[str, int]:
    """32 nodes (two without a group) in five groups of 12, 7, 5, 4 and 2, one group and
    one node with a long name, and a node that migrated 20 times: what issue 25's 32-node
    run shows, made through the API. Returns the wanderer's node id."""
    sizes = (12, 7, 5, 4, 2)
    names = ("a-group-with-a-long-descriptive-name", "beta", "gamma", "delta", "epsilon")
    groups = []
    for name, size in zip(names, sizes, strict=True):
        creds, client = create_group(url, name=name, max_capacity=16)
        client.report_round(creds.group_id, round=3, accuracy=0.5 + size / 30, loss=0.4,
                            num_nodes=size, num_examples=100 * size)  # fmt: skip
        groups += [creds.group_id] * size
    nodes = []
    for i in range(32):
        name = "a-node-with-a-very-long-descriptive-name" if i == 5 else f"worker-{i:02d}"
        node = register_node(url, name=name)
        gid = groups[i] if i < len(groups) else None
        if gid is not None:
            node.client.join_group(gid, node.node_id)
        node.client.heartbeat(node.node_id, group_id=gid, accuracy=0.5 + (i % 10) / 20, round=3)
        nodes.append(node)
    wanderer = nodes[13]  # in the second group
    home, away = groups[13], groups[0]
    for k in range(20):
        to = away if k % 2 == 0 else home
        wanderer.client.migrate(
            wanderer.node_id, to_group_id=to, reason="probe", expected_gain=0.01
        )
    return {"wanderer": wanderer.node_id}


OVERLAPS = """
const boxes = (sel, opts) => window.myceliumDashboard.cy.nodes(sel).map(
  n => [n.id(), n.renderedBoundingBox(opts)]);
const meet = (a, b) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
const pairs = (list) => list.flatMap(([i, a], k) =>
  list.slice(k + 1).filter(([, b]) => meet(a, b)).map(([j]) => [i, j]));
return {
  groups: pairs(boxes('.group', {includeLabels: true})),
  members: pairs(boxes('.member', {includeLabels: false})),
};
"""


def test_dashboard_stays_readable_with_32_nodes_in_5_groups(tmp_path: Path) -> None:
    """No group box over another, no node over another, nodes big enough to click, long
    names cut (with the whole name in a title), and the panels scroll instead of growing."""
    with start_registry(tmp_path) as (url, _proc), chromium() as driver:
        ids = build_large_network(url)
        driver.get(f"{url}/dashboard")
        until(driver, "window.myceliumDashboard && window.myceliumDashboard.model.live"
              " && window.myceliumDashboard.cy.nodes('.member').length === 32"
              " && document.querySelectorAll('#groups tbody tr').length === 5",
              timeout=20, what="32 nodes and 5 groups drawn")  # fmt: skip
        until(driver, "!window.myceliumDashboard.moving()", timeout=10, what="the map still")
        overlaps = driver.execute_script(OVERLAPS)
        assert overlaps == {"groups": [], "members": []}, overlaps
        smallest = driver.execute_script(
            "return Math.min(...window.myceliumDashboard.cy.nodes('.member')"
            ".map(n => n.renderedWidth()));"
        )
        assert smallest >= 14, f"nodes drawn {smallest:.1f} px wide: too small to read or click"
        inside = driver.execute_script(
            "const cy = window.myceliumDashboard.cy, b = cy.elements().renderedBoundingBox();"
            "return b.x1 >= -1 && b.y1 >= -1 && b.x2 <= cy.width() + 1 && b.y2 <= cy.height() + 1;"
        )
        assert inside, "the map does not show every node"
        cut = driver.execute_script(
            "const td = document.querySelector('#groups td.name');"
            "return [td.scrollWidth > td.clientWidth, td.title];"
        )
        assert cut == [True, "a-group-with-a-long-descriptive-name #1"], cut

        click_node(driver, ids["wanderer"])
        until(driver, "document.querySelectorAll('#node-detail .history tr').length === 23",
              timeout=5, what="the wanderer's history: registered, joined, 20 moves")  # fmt: skip
        heights = driver.execute_script(
            "const box = document.querySelector('#node-detail .history-box');"
            "return [box.scrollHeight > box.clientHeight,"
            " document.getElementById('node-panel').offsetHeight,"
            " document.getElementById('map-panel').offsetHeight];"
        )
        scrolls, node_panel, map_panel = heights
        assert scrolls and node_panel <= map_panel, heights
        save_screenshot(driver, _screenshot_dir(tmp_path) / "dashboard-32.png")
        assert console_problems(driver) == []


def test_a_page_that_follows_an_id_the_registry_does_not_know_opens_again(
    tmp_path: Path,
) -> None:
    """The registry comes back on the same address with another database: the stream does
    not know the page's id (reset), and the page opens again from a fresh snapshot instead
    of keeping the old network or replaying from id 0."""
    port = free_port()
    with chromium() as driver:
        with start_registry(tmp_path, db_path=tmp_path / "old.db", port=port) as (url, _):
            create_group(url, name="old-group")
            for i in range(5):
                register_node(url, name=f"old-{i}")
            driver.get(f"{url}/dashboard")
            until(driver, "window.myceliumDashboard && window.myceliumDashboard.model.live"
                  " && document.querySelectorAll('#groups tbody tr').length === 1",
                  timeout=15, what="the page following the old registry")  # fmt: skip
            assert feed_ids(driver) == [6, 5, 4, 3, 2, 1]
        with start_registry(tmp_path, db_path=tmp_path / "new.db", port=port, name="new"):
            register_node(url, name="new-0")
            until(driver, "window.myceliumDashboard.model.live"
                  " && window.myceliumDashboard.model.nodes.size === 1"
                  " && document.querySelectorAll('#feed li').length === 1",
                  timeout=20, what="the page opened again on the new registry")  # fmt: skip
            assert feed_ids(driver) == [1]
            assert "new-0 registered" in text_of(driver, "feed")
            names = driver.execute_script(
                "return [...window.myceliumDashboard.model.nodes.values()].map(n => n.name)"
            )
            assert names == ["new-0"]
            assert text_of(driver, "groups").count("old-group") == 0
            stream = driver.execute_script("return window.myceliumDashboard.streamUrl()")
            assert stream in {f"{url}/events/stream?after={i}" for i in (0, 1)}, stream
            assert console_problems(driver) == [], console_problems(driver)
