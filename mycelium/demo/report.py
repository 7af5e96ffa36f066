"""The demo's report: groups with their purity and rounds, each node's accuracy in its group
vs alone, the migrations, timings, and (for a failed run) what failed. Written as JSON,
then drawn as a PNG by :mod:`mycelium.demo.figure`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mycelium.demo.observation import Snapshot, migrations, purity

if TYPE_CHECKING:
    from mycelium.api import GroupDetail
    from mycelium.demo.observation import DemoRun

STATUS_FILE = "status.json"  # each agent writes it in its work dir


def read_node_status(run: DemoRun) -> dict[str, dict[str, Any]]:
    """Each agent's status.json (local-only vs group vs personal accuracy); {} when absent."""
    status: dict[str, dict[str, Any]] = {}
    for spec in run.specs:
        path = run.run_dir / spec.name / STATUS_FILE
        try:
            status[spec.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            status[spec.name] = {}
    return status


def _group_entry(group: GroupDetail, clusters: dict[str, int]) -> dict[str, Any]:
    members = [m.name for m in group.members]
    return {
        "group_id": group.group_id,
        "name": group.name,
        "status": group.status,
        "members": [{"name": m, "cluster": clusters.get(m)} for m in members],
        "purity": purity(members, clusters),
        "accuracy": group.accuracy,
        "round": group.round,
        "rounds": [
            {
                "round": r.round,
                "accuracy": r.accuracy,
                "loss": r.loss,
                "num_nodes": r.num_nodes,
                "at": r.reported_at,
            }
            for r in group.rounds
        ],
    }


def _node_entries(run: DemoRun) -> list[dict[str, Any]]:
    status = read_node_status(run)
    return [
        {
            "name": spec.name,
            "cluster": spec.cluster,
            "misplaced": spec.misplaced,
            "group_id": status[spec.name].get("group_id"),
            "local_test_accuracy": status[spec.name].get("local_test_accuracy"),
            "group_test_accuracy": status[spec.name].get("group_test_accuracy"),
            # the model the node predicts with: the best of personal, local and group on val
            "personal_test_accuracy": status[spec.name].get("personal_test_accuracy"),
            "uses_personal": status[spec.name].get("uses_personal"),
            "predicts_with": status[spec.name].get("predicts_with"),
        }
        for spec in run.specs
    ]


def build_report(
    run: DemoRun, snap: Snapshot | None, failure: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the demo knows; ``snap`` None when the registry was never read."""
    clusters = {s.name: s.cluster for s in run.specs}
    names = {e.node_id: e.data.get("name") for e in run.events if e.type == "node_registered"}
    return {
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run.config).items()
        },
        "registry_url": run.registry_url,
        "failure": failure,
        "groups": [_group_entry(g, clusters) for g in (snap.groups if snap else [])],
        "nodes": _node_entries(run),
        "migrations": [
            {
                "node_id": e.node_id,
                "node": names.get(e.node_id),
                "at": e.at,
                **e.data,
            }
            for e in migrations(run.events)
        ],
        "events": [e.model_dump() for e in run.events],
        "started_unix": run.started_unix,
        "timings": {
            **run.timings,
            "wall_s": round(run.elapsed(), 1),
            "peak_pss_mb": round(run.peak_pss_mb),
        },
    }


def write_outputs(run: DemoRun, report: dict[str, Any], *, figure: bool = True) -> None:
    """Write report.json, then (unless ``figure`` is False: a failed run leaves its
    report at once) the figure."""
    report_path = run.config.report_path or run.run_dir / "report.json"
    plot_path = (run.config.plot_path or run.run_dir / "demo.png") if figure else None
    report["report_path"], report["plot_path"] = str(report_path), plot_path and str(plot_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    if plot_path is not None:
        from mycelium.demo.figure import plot_report

        plot_report(report, plot_path)
