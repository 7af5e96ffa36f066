"""The figure of ``bench scale``: each cost against N (one panel per cost)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.scale_bench import ScaleFigures


def plot(results: Sequence[ScaleFigures], path: Path) -> None:
    """Write a PNG of settle time, memory, registry traffic, model bytes and CPU against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r.nodes for r in results]
    fig, axes = plt.subplots(1, 5, figsize=(18, 3.6))
    settle, memory, traffic, models, cpu = axes
    settle.plot(ns, [r.settled_s or float("nan") for r in results], "o-", label="settled")
    settle.plot(ns, [r.wall_s for r in results], "s--", label="wall")
    settle.set_title("time (s)")
    memory.plot(ns, [r.peak_pss_mb / 1024 for r in results], "o-", label="all")
    for kind in ("agent", "supernode", "superlink", "superexec", "serverapp"):
        memory.plot(
            ns, [r.peak_pss_mb_by_kind.get(kind, 0.0) / 1024 for r in results], ".-", label=kind
        )
    memory.set_title("peak PSS (GB)")
    total = [sum(v["bytes_per_s"] for v in r.routes.values()) / 1000 for r in results]
    traffic.plot(ns, total, "o-", label="all routes")
    requests = [sum(v["requests_per_s"] for v in r.routes.values()) for r in results]
    traffic.plot(ns, requests, "s--", label="requests/s")
    traffic.set_title("registry kB/s, requests/s")
    models.plot(ns, [r.model_bytes_per_interval / 1000 for r in results], "o-", label="200")
    models.set_title("model kB per evaluation interval")
    cpu.plot(ns, [r.cpu_s_per_node_min for r in results], "o-")
    cpu.set_title("CPU s per node per minute")
    for ax in axes:
        ax.set_xlabel("nodes N")
        ax.grid(alpha=0.3)
    for ax in (settle, memory, traffic):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
