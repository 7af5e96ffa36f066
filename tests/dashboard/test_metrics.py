"""The request figures' exposition: Prometheus histogram semantics (le = at most)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mycelium.dashboard.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_latency_buckets_are_cumulative_and_count_at_most_their_bound() -> None:
    metrics = Metrics()
    route = "/nodes/{node_id}/heartbeat"
    for seconds in (0.001, 0.0011, 0.04, 20.0):
        metrics.requests.observe("POST", route, 200, seconds)
    metrics.requests.observe("POST", route, 409, 0.002)
    s = samples(metrics)
    labels = (("method", "POST"), ("route", route))

    def bucket(le: str) -> float:
        return s[("mycelium_http_request_duration_seconds_bucket", (("le", le), *labels))]

    assert bucket("0.001") == 1  # exactly on the bound counts in it
    assert bucket("0.0025") == 3 and bucket("0.05") == 4 and bucket("10.0") == 4
    assert bucket("+Inf") == 5
    assert s[("mycelium_http_request_duration_seconds_count", labels)] == 5
    assert abs(s[("mycelium_http_request_duration_seconds_sum", labels)] - 20.0441) < 1e-9
    assert s[("mycelium_heartbeats_total", ())] == 4  # the 409 is not accepted
    assert s[("mycelium_http_responses_total", (*labels, ("status", "409")))] == 1
