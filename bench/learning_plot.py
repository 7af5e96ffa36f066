"""The ``--plot`` figure of ``bench learning``: accuracy over rounds, one panel per data
scenario, one line per algorithm; arrivals (ticks at the bottom), departures (crosses) and
the drift (dashed line) marked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mycelium.learning.sim import RunResult
from mycelium.learning.sim.timeline import Timeline

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def plot(results: dict[str, list[RunResult]], timelines: dict[str, Timeline], path: Path) -> None:
    """Write the PNG; a one-line ValueError when the file cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (scenario, runs) in zip(axes[0], results.items(), strict=True):
        for r in runs:
            ax.plot(
                range(1, len(r.accuracy_per_round) + 1), r.accuracy_per_round, label=r.algorithm
            )
        _mark(ax, timelines[scenario])
        ax.set_title(scenario)
        ax.set_xlabel("round")
        ax.set_ylabel("mean test accuracy of present clients")
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)


def _mark(ax: Axes, timeline: Timeline) -> None:
    """Arrivals, departures and the drift on the panel (1-based rounds, as the x axis)."""
    arrivals = [a + 1 for a in timeline.arrive if a > 0]
    departures = [d + 1 for d in timeline.leave if d is not None]
    if arrivals:
        ax.plot(arrivals, [0.03] * len(arrivals), "|", color="black", ms=10, label="arrival")
    if departures:
        ax.plot(departures, [0.08] * len(departures), "x", color="gray", label="departure")
    if timeline.drift_round is not None:
        label = f"drift ({len(timeline.drifted)} nodes)"
        ax.axvline(timeline.drift_round + 1, color="red", ls="--", lw=1, label=label)
