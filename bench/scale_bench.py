"""Scale benchmark: the real stack (registry, node agents, their Flower groups) on loopback
for each N in ``--nodes``, N/6 latent clusters, at most 4 (rotate digits has four distinct
rotations; the demo's timers), each N
alone, started and watched by the demo's own code (:func:`mycelium.demo.run.run_demo`).

Per N: time until settled (the demo's rule: everyone placed, no membership change for three
evaluation intervals, every group's accuracy flat), when the groups last became pure, final
purity, moves per node, median round time, the registry's requests/s and body bytes/s by
route (its ``/metrics``, scraped when the registry is up and when the run settles), model
bytes downloaded per evaluation interval (and how many probes were answered 304), peak
memory as PSS (``/proc/PID/smaps_rollup``) summed over the run's process tree, in all and per
kind of process, and CPU seconds per node per minute (utime + stime of every process seen).

Memory is sampled every :data:`SAMPLE_S` seconds in a daemon thread; a kind's peak is the
largest sum of that kind at one sample (kinds may peak at different samples).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench import BenchError
from mycelium.learning.data import ROTATE_CLUSTERS
from mycelium.procs import cmdline, cpu_seconds, descendant_pids, pss_split_kb

if TYPE_CHECKING:
    from mycelium.demo.observation import DemoRun, Snapshot

logger = logging.getLogger(__name__)

NODES_PER_CLUSTER = 6
SAMPLE_S = 5.0
MODEL_ROUTE = "/groups/{group_id}/model"
# Kinds of process, by a piece of their command line (first match wins).
KINDS = (
    ("superlink", "flower-superlink"),
    ("superexec", "flower-superexec"),
    ("serverapp", "flwr-serverapp"),
    ("serverapp", "mycelium.flower.serverapp_exec"),  # the same process before its exec
    ("flwr-run", "/flwr run "),
    ("supernode", "flower-supernode"),
    ("supernode", "flwr-clientapp"),
    ("registry", " registry "),
    ("agent", " node "),
    ("agent", "multiprocessing.forkserver"),  # the zygote and the agents forked from it
)


def kind_of(cmdline: str) -> str:
    """The kind of a process from its command line (args joined by spaces, padded)."""
    return next((kind for kind, piece in KINDS if piece in cmdline), "other")


def _cmdline(pid: int) -> str | None:
    line = cmdline(pid)
    return None if line is None else f" {line} "


class TreeSampler:
    """PSS by kind and CPU seconds of every descendant of ``root``, in a daemon thread."""

    def __init__(self, root: int, interval: float = SAMPLE_S) -> None:
        self.root = root
        self.interval = interval
        self.peak_total_mb = 0.0
        self.peak_by_kind_mb: dict[str, float] = {}
        self.anon_at_peak_mb: dict[str, float] = {}  # the anonymous part of each peak
        self.count_at_peak: dict[str, int] = {}
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (kind, last CPU s seen)
        self._kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (after one last sample); idempotent, also when never started."""
        if self._stop.is_set() or not self._thread.is_alive():
            self._stop.set()
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        by_kind: dict[str, float] = {}
        anon: dict[str, float] = {}
        counts: dict[str, int] = {}
        for pid in descendant_pids(self.root):
            kind = self._kinds.get(pid)
            if kind is None:
                cmd = _cmdline(pid)
                if cmd is None:
                    continue
                kind = self._kinds[pid] = kind_of(cmd)
            pss, anonymous = pss_split_kb(pid)
            by_kind[kind] = by_kind.get(kind, 0.0) + pss / 1024
            anon[kind] = anon.get(kind, 0.0) + anonymous / 1024
            counts[kind] = counts.get(kind, 0) + 1
            self._cpu[pid] = (kind, max(self._cpu.get(pid, (kind, 0.0))[1], cpu_seconds(pid)))
        self.peak_total_mb = max(self.peak_total_mb, sum(by_kind.values()))
        for kind, mb in by_kind.items():
            if mb > self.peak_by_kind_mb.get(kind, 0.0):
                self.peak_by_kind_mb[kind] = mb
                self.anon_at_peak_mb[kind] = anon[kind]
                self.count_at_peak[kind] = counts[kind]

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, seconds in self._cpu.values():
            out[kind] = out.get(kind, 0.0) + seconds
        return out


# -- the registry's /metrics ------------------------------------------------------------------
@dataclass(frozen=True)
class Scrape:
    """Counters of one ``/metrics`` scrape: responses by (method, route, status) and body
    bytes by (method, route)."""

    at: float
    responses: dict[tuple[str, str, str], float]
    body_bytes: dict[tuple[str, str], float]


def scrape(url: str) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    responses: dict[tuple[str, str, str], float] = {}
    body: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "mycelium_http_responses_total":
                responses[(s.labels["method"], s.labels["route"], s.labels["status"])] = s.value
            elif s.name == "mycelium_http_response_body_bytes_total":
                body[(s.labels["method"], s.labels["route"])] = s.value
    return Scrape(time.monotonic(), responses, body)


def route_rates(first: Scrape, last: Scrape) -> dict[str, dict[str, float]]:
    """``"METHOD route"`` -> requests/s and bytes/s between two scrapes (busiest first)."""
    span = max(1e-9, last.at - first.at)
    requests: dict[str, float] = {}
    for (method, route, _), n in last.responses.items():
        key = f"{method} {route}"
        requests[key] = requests.get(key, 0.0) + n
    for (method, route, _), n in first.responses.items():
        requests[f"{method} {route}"] -= n
    rates = {
        key: {
            "requests_per_s": round(n / span, 2),
            "bytes_per_s": round(
                (last.body_bytes.get(_split(key), 0.0) - first.body_bytes.get(_split(key), 0.0))
                / span
            ),
        }
        for key, n in requests.items()
        if "/metrics" not in key
    }
    return dict(sorted(rates.items(), key=lambda kv: -kv[1]["bytes_per_s"]))


def _split(key: str) -> tuple[str, str]:
    method, _, route = key.partition(" ")
    return method, route


def _delta(first: Scrape, last: Scrape, status: str) -> int:
    """Model downloads answered with ``status`` between the scrapes."""
    key = ("GET", MODEL_ROUTE, status)
    return int(last.responses.get(key, 0.0) - first.responses.get(key, 0.0))


# -- one N ------------------------------------------------------------------------------------
@dataclass
class ScaleFigures:
    """What one N measured (see the module docstring)."""

    nodes: int
    clusters: int
    settled_s: float | None
    pure_since_s: float | None
    wall_s: float
    final_purity: float | None
    groups: int
    moves_per_node: float
    median_round_s: float | None
    model_bytes_per_interval: float
    model_gets_200: int
    model_gets_304: int
    peak_pss_mb: float
    peak_pss_mb_by_kind: dict[str, float]
    anon_mb_at_peak_by_kind: dict[str, float]  # heap, stacks, arrays; the rest is files
    node_pss_mb: float  # (agent + supernode peaks) / N
    group_pss_mb: float  # (superlink + serverapp peaks) / groups (no superexec)
    cpu_s_per_node_min: float
    cpu_s_by_kind: dict[str, float]
    routes: dict[str, dict[str, float]] = field(default_factory=dict)


class ScaleView:
    """The demo's viewer: samples the tree and scrapes the registry around the run."""

    def __init__(self) -> None:
        self.sampler = TreeSampler(os.getpid())
        self.first: Scrape | None = None
        self.last: Scrape | None = None
        self.pure_since: float | None = None

    def started(self, run: DemoRun) -> None:
        self.first = scrape(run.registry_url)
        self.sampler.start()

    def update(self, run: DemoRun, snap: Snapshot) -> None:
        from mycelium.demo.observation import everyone_placed

        pure = everyone_placed([s.name for s in run.specs], snap) and _min_purity(run, snap) == 1
        if not pure:
            self.pure_since = None
        elif self.pure_since is None:
            self.pure_since = snap.at

    def finished(self, run: DemoRun, report: dict[str, Any]) -> None:
        self.last = scrape(run.registry_url)
        self.sampler.stop()

    def holding(self, run: DemoRun) -> None:  # never asked: the bench does not hold
        return None


def _min_purity(run: DemoRun, snap: Snapshot) -> float | None:
    from mycelium.demo.observation import purity

    clusters = {s.name: s.cluster for s in run.specs}
    values = [purity([m.name for m in g.members], clusters) for g in snap.groups if g.members]
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _median_round_s(report: dict[str, Any]) -> float | None:
    gaps = [
        b["at"] - a["at"]
        for g in report["groups"]
        for a, b in zip(g["rounds"], g["rounds"][1:], strict=False)
    ]
    return round(statistics.median(gaps), 2) if gaps else None


def measure(n: int, workdir: Path, *, seed: int, duration: float | None) -> ScaleFigures:
    """Run the demo with ``n`` nodes and n/6 clusters until it settles; gather figures."""
    from mycelium.demo.config import DemoConfig
    from mycelium.demo.observation import DemoFailed
    from mycelium.demo.run import run_demo
    from mycelium.procs import free_port

    # rotate has 4 distinct clusters: a fifth would repeat the first's data (issue 25's
    # mixed group at N=32 was clusters 0 and 4, both unrotated, rightly trained together).
    clusters = max(1, min(n // NODES_PER_CLUSTER, ROTATE_CLUSTERS))
    config = DemoConfig(
        nodes=n,
        clusters=clusters,
        seed=seed,
        port=free_port(),
        duration=duration,  # None: the demo's own default for n nodes
        run_dir=workdir / f"n{n}",
    )
    view = ScaleView()
    try:
        report = run_demo(config, view)
    except DemoFailed as exc:
        raise BenchError(f"N={n}: {exc}") from None
    finally:
        view.sampler.stop()
    if view.first is None or view.last is None:
        raise BenchError(f"N={n}: the registry's /metrics was not read")
    return _figures(config, report, view)


def _figures(config: Any, report: dict[str, Any], view: ScaleView) -> ScaleFigures:
    n = config.nodes
    first, last = view.first, view.last
    assert first is not None and last is not None
    span = max(1e-9, last.at - first.at)
    intervals = span / config.evaluation_interval
    model_bytes = last.body_bytes.get(("GET", MODEL_ROUTE), 0.0) - first.body_bytes.get(
        ("GET", MODEL_ROUTE), 0.0
    )
    populated = [g for g in report["groups"] if g["members"]]
    purities = [g["purity"] for g in populated if g["purity"] is not None]
    peaks = {k: round(v, 1) for k, v in sorted(view.sampler.peak_by_kind_mb.items())}
    group_mb = sum(peaks.get(k, 0.0) for k in ("superlink", "superexec", "serverapp"))
    cpu = view.sampler.cpu_by_kind()
    wall = report["timings"]["wall_s"]
    return ScaleFigures(
        nodes=n,
        clusters=config.clusters,
        settled_s=report["timings"].get("stable_at_s"),
        pure_since_s=None if view.pure_since is None else round(view.pure_since, 1),
        wall_s=wall,
        final_purity=round(min(purities), 2) if purities else None,
        groups=len(populated),
        moves_per_node=round(len(report["migrations"]) / n, 2),
        median_round_s=_median_round_s(report),
        model_bytes_per_interval=round(model_bytes / intervals),
        model_gets_200=_delta(first, last, "200"),
        model_gets_304=_delta(first, last, "304"),
        peak_pss_mb=round(view.sampler.peak_total_mb, 1),
        peak_pss_mb_by_kind=peaks,
        anon_mb_at_peak_by_kind={
            k: round(v, 1) for k, v in sorted(view.sampler.anon_at_peak_mb.items())
        },
        node_pss_mb=round((peaks.get("agent", 0.0) + peaks.get("supernode", 0.0)) / n, 1),
        group_pss_mb=round(group_mb / max(1, view.sampler.count_at_peak.get("superlink", 1)), 1),
        cpu_s_per_node_min=round(sum(cpu.values()) / n / (wall / 60), 2),
        cpu_s_by_kind={k: round(v, 1) for k, v in sorted(cpu.items())},
        routes=route_rates(first, last),
    )


# -- entry point ------------------------------------------------------------------------------
def parse_nodes(text: str) -> list[int]:
    """``"6,12,24"`` -> [6, 12, 24]; :class:`BenchError` for anything else."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--nodes wants numbers separated by commas, got {text!r}") from None
    if not values or any(v < 2 for v in values):
        raise BenchError("--nodes wants counts of at least 2")
    return values


def run(
    *,
    nodes: Sequence[int],
    seed: int = 0,
    duration: float | None = None,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    workdir: Path | None = None,
) -> str:
    """Measure each N alone; print-ready table back; JSON and a PNG when asked."""
    import tempfile
    from contextlib import ExitStack

    from bench.faults_report import commit

    results: list[ScaleFigures] = []
    load_before = os.getloadavg()
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-")))
        workdir.mkdir(parents=True, exist_ok=True)
        for n in nodes:
            results.append(measure(n, workdir, seed=seed, duration=duration))
            logger.info("N=%s measured", n)
    load_after = os.getloadavg()
    context = {"commit": commit(), "load_before": load_before, "load_after": load_after}
    if json_path is not None:
        payload = {**context, "results": [asdict(r) for r in results]}
        json_path.write_text(json.dumps(payload, indent=2))
    if plot_path is not None:
        from bench.scale_plot import plot

        plot(results, plot_path)
    load = " -> ".join("/".join(f"{x:.1f}" for x in la) for la in (load_before, load_after))
    return f"commit {context['commit']}, load {load}\n" + format_report(results)


def format_report(results: Sequence[ScaleFigures]) -> str:
    head = (
        f"{'N':>3} {'K':>2} {'settled s':>9} {'pure s':>7} {'purity':>6} {'groups':>6} "
        f"{'moves/n':>7} {'round s':>7} {'model kB/int':>12} {'200/304':>9} "
        f"{'PSS MB':>7} {'node MB':>7} {'group MB':>8} {'CPU s/n/min':>11}"
    )
    lines = [head]
    for r in results:
        lines.append(
            f"{r.nodes:>3} {r.clusters:>2} {_num(r.settled_s):>9} {_num(r.pure_since_s):>7} "
            f"{_num(r.final_purity):>6} {r.groups:>6} {r.moves_per_node:>7.2f} "
            f"{_num(r.median_round_s):>7} {r.model_bytes_per_interval / 1000:>12.0f} "
            f"{r.model_gets_200:>4}/{r.model_gets_304:<4} {r.peak_pss_mb:>7.0f} "
            f"{r.node_pss_mb:>7.0f} {r.group_pss_mb:>8.0f} {r.cpu_s_per_node_min:>11.1f}"
        )
    for r in results:
        anon = r.anon_mb_at_peak_by_kind
        kinds = ", ".join(
            f"{k} {v:.0f} ({anon.get(k, 0):.0f} anon)" for k, v in r.peak_pss_mb_by_kind.items()
        )
        lines.append(f"N={r.nodes} peak PSS MB by kind: {kinds}")
        busiest = list(r.routes.items())[:6]
        routes = "; ".join(
            f"{k} {v['requests_per_s']}/s {v['bytes_per_s'] / 1000:.1f} kB/s" for k, v in busiest
        )
        lines.append(f"N={r.nodes} registry: {routes}")
    lines.append(
        "settled: the demo's rule (placed, no move for 3 evaluation intervals, flat accuracy); "
        "pure s: since when every group is pure; PSS from smaps_rollup every "
        f"{SAMPLE_S:.0f} s; node = (agent + supernode peaks)/N; group = per SuperLink."
    )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
