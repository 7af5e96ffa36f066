"""Dashboard routes and /metrics on the in-process registry app (TestClient, file database,
injected clock): the page's security headers and files, no secrets, Prometheus figures."""

from __future__ import annotations

import hashlib
import json
import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mycelium.dashboard.routes import ASSETS, STATIC
from mycelium.dashboard.sources import state_reader
from mycelium.registry.app import storage_sources
from tests.conftest import FakeClock, auth, sweep
from tests.registry.test_api import GROUP_TTL, NODE_TTL, api, clock, new_group, new_node

__all__ = ["api", "clock"]  # fixtures shared with the registry's API tests


def metrics(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


# -- the page ----------------------------------------------------------------------------------


def test_root_redirects_to_the_dashboard_with_a_relative_url(api: TestClient) -> None:
    r = api.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "dashboard"


def test_page_has_a_strict_csp_and_no_inline_script_or_style(api: TestClient) -> None:
    r = api.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    html = r.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="' in attrs and body.strip() == "" for attrs, body in scripts)
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers


def test_every_url_of_the_page_is_relative(api: TestClient) -> None:
    """So the page works on HTTPS and under a path prefix (no scheme, no leading slash)."""
    html = api.get("/dashboard").text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(not re.match(r"^([a-z]+:|/)", u) for u in urls), urls
    script = (STATIC / "dashboard.js").read_text()
    for call in re.findall(r'(?:fetch|EventSource)\(\s*[`"]([^`"]+)', script):
        assert not re.match(r"^([a-z]+:|/)", call), call


def test_static_files_are_a_fixed_list(api: TestClient) -> None:
    for name, media_type in ASSETS.items():
        r = api.get(f"/dashboard/static/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(media_type), name
    assert api.get("/dashboard/static/index.html").status_code == 404
    assert api.get("/dashboard/static/..%2Fstats.py").status_code == 404
    assert api.get("/dashboard/static/nope.js").status_code == 404


def test_vendored_libraries_ship_with_their_licences(api: TestClient) -> None:
    for name, holder in (("cytoscape", "Cytoscape Consortium"), ("uplot", "Leon Sorokin")):
        text = api.get(f"/dashboard/static/LICENSE.{name}.txt").text
        assert "Permission is hereby granted, free of charge" in text and holder in text


def test_docs_link_the_dashboard(api: TestClient) -> None:
    info = api.get("/openapi.json").json()
    assert "[dashboard](dashboard)" in info["info"]["description"]
    assert "/events/stream" in info["paths"] and "/metrics" in info["paths"]


def test_nothing_secret_in_the_state_or_the_events(api: TestClient) -> None:
    node_id, token = new_node(api, "alice")
    private = new_group(api, name="private", join_policy="invite-only")
    invite = private["invite_code"]
    r = api.post(
        f"/groups/{private['group_id']}/join",
        json={"node_id": node_id, "invite_code": invite},
        headers=auth(token),
    )
    assert r.status_code == 200, r.text
    read_state = state_reader(storage_sources(lambda: api.app.state.storage))
    shown = json.dumps(api.portal.call(read_state)) + api.get("/events").text
    shown += api.get(f"/groups/{private['group_id']}").text + api.get("/metrics").text
    for secret in (token, private["group_token"], invite):
        assert secret not in shown
        assert hashlib.sha256(secret.encode()).hexdigest() not in shown
    assert "alice" in shown and "private" in shown  # the state itself is there


# -- /metrics ----------------------------------------------------------------------------------


def test_metrics_count_the_network_and_its_requests(api: TestClient, clock: FakeClock) -> None:
    a, a_token = new_node(api, "a")
    b, b_token = new_node(api, "b")
    g1, g2 = new_group(api, name="g1", max_capacity=3), new_group(api, name="g2")
    for n, token, g in ((a, a_token, g1), (b, b_token, g1)):
        assert api.post(f"/groups/{g['group_id']}/join", json={"node_id": n}, headers=auth(token))
    beat = {"group_id": g1["group_id"], "accuracy": 0.5}
    for _ in range(3):
        assert api.post(f"/nodes/{a}/heartbeat", json=beat, headers=auth(a_token)).is_success
    wrong = {"group_id": g2["group_id"]}
    assert api.post(f"/nodes/{a}/heartbeat", json=wrong, headers=auth(a_token)).status_code == 409
    move = {"to_group_id": g2["group_id"], "reason": "better", "expected_gain": 0.2}
    assert api.post(f"/nodes/{b}/migrate", json=move, headers=auth(b_token)).is_success
    blob = b"\x01" * 1234
    sha = hashlib.sha256(blob).hexdigest()
    headers = {**auth(g1["group_token"]), "X-Model-SHA256": sha}
    assert api.put(f"/groups/{g1['group_id']}/model", content=blob, headers=headers).is_success
    assert api.get("/no/such/route").status_code == 404

    m = metrics(api)
    assert m[("mycelium_nodes_registered", ())] == 2 and m[("mycelium_nodes_alive", ())] == 2
    assert m[("mycelium_groups", (("status", "active"),))] == 2
    assert m[("mycelium_group_members", (("group_id", str(g1["group_id"])),))] == 1
    assert m[("mycelium_group_members", (("group_id", str(g2["group_id"])),))] == 1
    assert m[("mycelium_group_capacity", (("group_id", str(g1["group_id"])),))] == 3
    assert m[("mycelium_model_bytes_stored", ())] == 1234
    assert m[("mycelium_heartbeats_total", ())] == 3  # the 409 is not an accepted heartbeat
    assert m[("mycelium_joins_total", ())] == 2 and m[("mycelium_migrations_total", ())] == 1
    hb = (("method", "POST"), ("route", "/nodes/{node_id}/heartbeat"))
    assert m[("mycelium_http_request_duration_seconds_count", hb)] == 4
    assert m[("mycelium_http_responses_total", (*hb, ("status", "409")))] == 1
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert m[("mycelium_http_responses_total", unmatched)] == 1
    assert m[("mycelium_dashboard_streams", ())] == 0

    clock.advance(GROUP_TTL + NODE_TTL + 1)  # everyone silent: dead nodes, failed groups
    sweep(api)
    m = metrics(api)
    assert m[("mycelium_nodes_alive", ())] == 0 and m[("mycelium_groups_alive", ())] == 0
    assert m[("mycelium_groups", (("status", "dissolved"),))] == 2
    assert not [k for k in m if k[0] == "mycelium_group_members"]
