"""Prometheus metrics of the registry (``GET /metrics``), with ``prometheus-client``.

Two kinds:

* request figures, counted by :class:`MetricsMiddleware` as answers leave (latency
  histogram and responses by route template, heartbeats / joins / migrations accepted);
  a request costs a few dictionary look-ups and counter increments;
* network figures (nodes alive, groups by status, live members per group, model bytes),
  read from the storage when Prometheus scrapes, by :meth:`Metrics.render`.

Each app has its own ``CollectorRegistry``, so apps in one process (tests) do not mix.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mycelium.registry.store.records import NetworkStats

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED = "unmatched"
"""Route label of requests no route matched (keeps scanners from making new series)."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Routes whose accepted answers are counted on their own.
COUNTED_ROUTES = {
    "/nodes/{node_id}/heartbeat": "heartbeats",
    "/groups/{group_id}/join": "joins",
    "/nodes/{node_id}/migrate": "migrations",
}


class NetworkCollector(Collector):
    """Gauges of the network from the last :class:`NetworkStats` read, and open streams."""

    def __init__(self, streams: Callable[[], int]) -> None:
        self.stats: NetworkStats | None = None
        self._streams = streams

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "mycelium_dashboard_streams", "Open event streams (GET /events/stream).",
            value=self._streams(),
        )  # fmt: skip
        stats = self.stats
        if stats is None:
            return
        yield from _node_gauges(stats)
        yield from _group_gauges(stats)
        yield GaugeMetricFamily(
            "mycelium_models_stored", "Groups with a stored model.", value=stats.models_stored
        )
        yield GaugeMetricFamily(
            "mycelium_model_bytes_stored", "Bytes of stored models.", value=stats.model_bytes
        )


def _node_gauges(stats: NetworkStats) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily(
        "mycelium_nodes_registered", "Registered nodes.", value=stats.nodes_registered
    )
    yield GaugeMetricFamily(
        "mycelium_nodes_alive", "Nodes that heartbeated within the node TTL.",
        value=stats.nodes_alive,
    )  # fmt: skip


def _group_gauges(stats: NetworkStats) -> Iterator[GaugeMetricFamily]:
    by_status = GaugeMetricFamily(
        "mycelium_groups", "Groups by status (active, failed, dissolved).", labels=["status"]
    )
    for status, count in sorted(stats.groups_by_status.items()):
        by_status.add_metric([status], count)
    yield by_status
    yield GaugeMetricFamily(
        "mycelium_groups_alive", "Active groups that reported within the group TTL.",
        value=stats.groups_alive,
    )  # fmt: skip
    members = GaugeMetricFamily(
        "mycelium_group_members", "Live members of each group not dissolved.", labels=["group_id"]
    )
    capacity = GaugeMetricFamily(
        "mycelium_group_capacity", "Capacity of each group not dissolved.", labels=["group_id"]
    )
    for group in stats.groups:
        members.add_metric([str(group.group_id)], group.live_members)
        capacity.add_metric([str(group.group_id)], group.max_capacity)
    yield members
    yield capacity


class Metrics:
    """The registry's metrics; :class:`MetricsMiddleware` feeds the request figures."""

    def __init__(self, *, streams: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "mycelium_http_request_duration_seconds",
            "Time from request to the end of the answer, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "mycelium_http_responses", "Answers by route template and status code.",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.accepted = {
            name: Counter(
                f"mycelium_{name}", f"Accepted {name} (2xx answers).", registry=self.registry
            )
            for name in sorted(set(COUNTED_ROUTES.values()))
        }
        self.network = NetworkCollector(streams)
        self.registry.register(self.network)
        ProcessCollector(registry=self.registry)
        self._histograms: dict[tuple[str, str], Any] = {}
        self._responses: dict[tuple[str, str, int], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answer: its latency, its status, and the counter of its route if any."""
        key = (method, route)
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = self.latency.labels(method, route)
        histogram.observe(seconds)
        self.count(method, route, status)
        counted = COUNTED_ROUTES.get(route)
        if counted is not None and 200 <= status < 300:
            self.accepted[counted].inc()

    def count(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        counter = self._responses.get(key)
        if counter is None:
            counter = self._responses[key] = self.responses.labels(method, route, str(status))
        counter.inc()

    async def render(self, stats: Callable[[], Awaitable[NetworkStats]]) -> bytes:
        """The exposition text, with the network figures read now."""
        self.network.stats = await stats()
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI: times each HTTP request to the end of its answer, by route template.

    ``untimed`` routes (long-lived streams) are counted but not put in the histogram.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, untimed: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.untimed = untimed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            if route in self.untimed:
                self.metrics.count(scope["method"], route, status)
            else:
                seconds = time.perf_counter() - started
                self.metrics.observe(scope["method"], route, status, seconds)
