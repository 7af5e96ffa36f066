"""Prometheus metrics of the registry (``GET /metrics``), with ``prometheus-client``.

Two kinds:

* request figures, counted by :class:`MetricsMiddleware` as answers leave (latency
  histogram, responses and body bytes by route template, heartbeats / joins / migrations
  accepted), in plain numbers that :class:`RequestCollector` exposes when scraped;
* network figures (nodes alive, groups by status, live members per group, model bytes),
  read from the storage when Prometheus scrapes, by :meth:`Metrics.render`.

Each app has its own ``CollectorRegistry``, so apps in one process (tests) do not mix.
"""

from __future__ import annotations

import os
import socket
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from mycelium.dashboard.sources import NetworkStats

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
        yield GaugeMetricFamily(
            "mycelium_self_preservation",
            "1 while the registry holds expiry (many nodes went silent at once), else 0.",
            value=int(stats.self_preservation),
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


class RequestCollector(Collector):
    """Request figures counted in plain integers and floats, exposed when scraped.

    Every request is counted on the event loop's thread, so no lock is needed: this keeps
    a request's cost to a few dictionary look-ups (prometheus-client's own Counter and
    Histogram take a lock per increment, three or four per request).
    """

    def __init__(self) -> None:
        self._timings: dict[tuple[str, str], list[float]] = {}
        """(method, route) -> [count in each bucket..., count above the last, sum]."""
        self._responses: dict[tuple[str, str, int], int] = {}
        self._bytes: dict[tuple[str, str], int] = {}
        """(method, route) -> body bytes of the answers sent."""
        self._accepted = dict.fromkeys(sorted(set(COUNTED_ROUTES.values())), 0)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answer: its latency, its status, and the counter of its route if any."""
        timing = self._timings.get((method, route))
        if timing is None:
            timing = self._timings[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        timing[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        timing[-1] += seconds
        self.count(method, route, status)
        counted = COUNTED_ROUTES.get(route)
        if counted is not None and 200 <= status < 300:
            self._accepted[counted] += 1

    def count(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        self._responses[key] = self._responses.get(key, 0) + 1

    def sent(self, method: str, route: str, size: int) -> None:
        """``size`` body bytes of answers to ``route`` left."""
        key = (method, route)
        self._bytes[key] = self._bytes.get(key, 0) + size

    def collect(self) -> Iterator[Any]:
        latency = HistogramMetricFamily(
            "mycelium_http_request_duration_seconds",
            "Time from request to the end of the answer, by route template.",
            labels=["method", "route"],
        )
        for (method, route), timing in sorted(self._timings.items()):
            cumulative = list(accumulate(timing[:-1]))
            buckets = [(str(b), n) for b, n in zip(LATENCY_BUCKETS, cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            latency.add_metric([method, route], buckets, sum_value=timing[-1])
        yield latency
        responses = CounterMetricFamily(
            "mycelium_http_responses", "Answers by route template and status code.",
            labels=["method", "route", "status"],
        )  # fmt: skip
        for (method, route, status), n in sorted(self._responses.items()):
            responses.add_metric([method, route, str(status)], n)
        yield responses
        sent = CounterMetricFamily(
            "mycelium_http_response_body_bytes", "Body bytes of answers by route template.",
            labels=["method", "route"],
        )  # fmt: skip
        for (method, route), size in sorted(self._bytes.items()):
            sent.add_metric([method, route], size)
        yield sent
        for name, n in self._accepted.items():
            yield CounterMetricFamily(f"mycelium_{name}", f"Accepted {name} (2xx answers).", n)


def process_identity() -> dict[str, str]:
    """The answering process: its host and pid (``X-Registry-Process`` says the same)."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


class Metrics:
    """The registry's metrics; :class:`MetricsMiddleware` feeds the request figures."""

    def __init__(self, *, streams: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestCollector()
        self.network = NetworkCollector(streams)
        self.registry.register(self.requests)
        self.registry.register(self.network)
        ProcessCollector(registry=self.registry)
        Info(
            "mycelium_registry_process",
            "Which registry process answered (several may share one PostgreSQL database).",
            registry=self.registry,
        ).info(process_identity())

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
        self.requests = metrics.requests
        self.untimed = untimed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, size = 500, 0

        async def send_status(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            self.requests.sent(scope["method"], route, size)
            if route in self.untimed:
                self.requests.count(scope["method"], route, status)
            else:
                seconds = time.perf_counter() - started
                self.requests.observe(scope["method"], route, status, seconds)
