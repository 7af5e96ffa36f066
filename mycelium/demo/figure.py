"""The demo's figure: group accuracy over time with migrations, and who ended where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLUSTER_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Write a PNG: left, each group's accuracy per round over time with migrations as
    vertical lines; right, the final node-to-group assignment coloured by true cluster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = report["started_unix"]
    fig, (ax, ax_nodes) = plt.subplots(
        1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    for g in report["groups"]:
        xs = [r["at"] - t0 for r in g["rounds"]]
        ys = [r["accuracy"] for r in g["rounds"]]
        clusters = sorted({m["cluster"] for m in g["members"] if m["cluster"] is not None})
        color = CLUSTER_COLORS[clusters[0] % len(CLUSTER_COLORS)] if len(clusters) == 1 else None
        if xs:
            label = f"group {g['group_id']} ({g['name']}), clusters {clusters or '-'}"
            ax.plot(xs, ys, marker=".", color=color, label=label)
    for m in report["migrations"]:
        ax.axvline(m["at"] - t0, color="red", linestyle="--", linewidth=1)
        ax.annotate(
            f"{m.get('node') or m['node_id']}: group {m.get('from_group_id')} -> "
            f"{m.get('to_group_id')}, gain {m.get('expected_gain', 0):+.2f}",
            (m["at"] - t0, 0.05),
            rotation=90,
            fontsize=7,
            color="red",
        )
    ax.set(
        xlabel="seconds since start",
        ylabel="group accuracy (members' own validation data)",
        ylim=(0, 1),
        title="Group accuracy (colour = members' cluster); red dashes: migrations",
    )
    if ax.get_legend_handles_labels()[1]:  # no legend (and no warning) before any round
        ax.legend(fontsize=7, loc="lower right")
    _plot_assignment(ax_nodes, report)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_assignment(ax: Any, report: dict[str, Any]) -> None:
    groups = sorted({n["group_id"] for n in report["nodes"] if n["group_id"] is not None})
    row = {gid: i for i, gid in enumerate(groups)}
    counts: dict[int, int] = {}
    for n in report["nodes"]:
        gid = n["group_id"]
        if gid is None:
            continue
        x = counts.get(gid, 0)
        counts[gid] = x + 1
        ax.scatter(x, row[gid], s=600, color=CLUSTER_COLORS[n["cluster"] % len(CLUSTER_COLORS)])
        ax.annotate(n["name"], (x, row[gid]), ha="center", va="center", fontsize=8, color="white")
    ax.set_yticks(range(len(groups)), [f"group {g}" for g in groups])
    ax.set_xticks([])
    ax.set_xlim(-0.6, max(counts.values(), default=1) - 0.4)
    ax.set_ylim(-0.6, len(groups) - 0.4)
    ax.set_title("Final assignment (colour = true cluster)")
