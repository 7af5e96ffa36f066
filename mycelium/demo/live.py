"""The demo's live terminal view (rich): groups, nodes, latest events, elapsed time."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    from mycelium.api import EventPublic, NodePublic
    from mycelium.demo.observation import DemoRun, Snapshot

EVENT_ROWS = 8
NODE_ROWS = 12  # more nodes: the live view groups them by latent cluster
PLAIN_EVERY_S = 10.0


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _describe(event: EventPublic, names: dict[int, str]) -> str:
    data = event.data
    group, kind = event.group_id, event.type
    node = names.get(event.node_id or -1, f"node {event.node_id}")
    if kind == "migrated":
        return (
            f"{node} migrated: group {data.get('from_group_id')} -> {data.get('to_group_id')}"
            f" (gain {_fmt(data.get('expected_gain'), '+.3f')}, {data.get('reason', '')})"
        )
    if kind in ("joined", "left", "evicted"):
        return f"{node} {kind} group {group}"
    if kind == "node_registered":
        return f"{node} registered"
    if kind == "group_created":
        return f"group {group} founded ({data.get('name', '')})"
    if kind in ("dissolved", "group_failed"):
        return f"group {group} {kind.replace('_', ' ')}"
    return f"{kind} {node} group={group}"


def render(run: DemoRun, snap: Snapshot) -> Group:
    clusters = {s.name: s.cluster for s in run.specs}
    many = len(snap.nodes) > NODE_ROWS
    groups = Table(title="groups", expand=True)
    for col in ("id", "name", "members (cluster)", "round", "accuracy", "status"):
        groups.add_column(col)
    for g in snap.groups:
        member_names = [m.name for m in g.members]
        groups.add_row(
            str(g.group_id),
            g.name,
            _members_by_cluster(member_names, clusters)
            if many
            else _members(member_names, clusters),
            str(g.round or "-"),
            _fmt(g.accuracy),
            g.status,
        )
    nodes = _clusters_table(snap, clusters) if many else _nodes_table(snap, clusters)
    names = {
        e.node_id: str(e.data.get("name", "?"))
        for e in snap.events
        if e.type == "node_registered" and e.node_id is not None
    }
    recent = snap.events[-EVENT_ROWS:]
    events = "\n".join(f"#{e.id:>4} {_describe(e, names)}" for e in recent)
    header = (
        f"Mycelium Net demo  |  elapsed {snap.at:5.0f}s / {run.config.time_budget:.0f}s  |  "
        f"dashboard: {run.registry_url}/dashboard"
    )
    return Group(Panel(header), groups, nodes, Panel(events or "(no events yet)", title="events"))


def _members(names: list[str], clusters: dict[str, int]) -> str:
    return ", ".join(f"{name}({clusters.get(name, '?')})" for name in names)


def _members_by_cluster(names: list[str], clusters: dict[str, int]) -> str:
    """``8: c3 x8`` or ``9: c0 x5, c3 x4``: how many members, from which clusters."""
    counts = Counter(clusters.get(name, -1) for name in names)
    parts = [f"c{c if c >= 0 else '?'} x{n}" for c, n in sorted(counts.items())]
    return f"{len(names)}: " + ", ".join(parts)


def _nodes_table(snap: Snapshot, clusters: dict[str, int]) -> Table:
    nodes = Table(title="nodes", expand=True)
    for col in ("name", "cluster", "group", "accuracy on own data", "round", "alive"):
        nodes.add_column(col)
    for n in snap.nodes:
        nodes.add_row(
            n.name,
            str(clusters.get(n.name, "?")),
            str(n.group_id or "-"),
            _fmt(n.accuracy),
            str(n.round or "-"),
            str(n.alive),
        )
    return nodes


def _clusters_table(snap: Snapshot, clusters: dict[str, int]) -> Table:
    """More nodes than :data:`NODE_ROWS`: one row per latent cluster (where its nodes are,
    their mean accuracy), so that the view fits a terminal at 32 nodes."""
    table = Table(title=f"{len(snap.nodes)} nodes by latent cluster", expand=True)
    for col in ("cluster", "nodes", "in groups", "no group", "mean accuracy on own data"):
        table.add_column(col)
    by_cluster: dict[int, list[NodePublic]] = {}
    for n in snap.nodes:
        by_cluster.setdefault(clusters.get(n.name, -1), []).append(n)
    for cluster, members in sorted(by_cluster.items()):
        placed = Counter(n.group_id for n in members if n.group_id is not None)
        accs = [n.accuracy for n in members if n.accuracy is not None]
        table.add_row(
            str(cluster if cluster >= 0 else "?"),
            str(len(members)),
            ", ".join(f"#{gid} x{count}" for gid, count in sorted(placed.items())) or "-",
            str(len(members) - sum(placed.values())),
            _fmt(sum(accs) / len(accs) if accs else None),
        )
    return table


def plain_line(snap: Snapshot) -> str:
    """One line of progress for a console that is not a terminal (logs, CI)."""
    groups = "; ".join(
        f"group {g.group_id}: {g.num_members} members, round {g.round or 0}, acc {_fmt(g.accuracy)}"
        for g in snap.groups
    )
    moves = sum(1 for e in snap.events if e.type == "migrated")
    summary = groups or "no group yet"
    return f"[{snap.at:5.0f}s] {len(snap.nodes)} nodes; {summary}; {moves} migrations"


class LiveView:
    """Draws the demo in the terminal; falls back to plain lines when not a TTY."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._live: Live | None = None
        self._last_line_at = -PLAIN_EVERY_S

    def started(self, run: DemoRun) -> None:
        # soft_wrap: a path or URL stays on one line, whatever the console's width.
        self.console.print(
            f"registry up at {run.registry_url}  (browse {run.registry_url}/docs)",
            soft_wrap=True,
        )
        self.console.print(f"live dashboard: {run.registry_url}/dashboard", soft_wrap=True)
        self.console.print(f"run folder: {run.run_dir}", soft_wrap=True)
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.start()

    def update(self, run: DemoRun, snap: Snapshot) -> None:
        if self._live is not None:
            self._live.update(render(run, snap))
        elif snap.at - self._last_line_at >= PLAIN_EVERY_S:
            self._last_line_at = snap.at
            self.console.print(plain_line(snap), soft_wrap=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def finished(self, run: DemoRun, report: dict[str, Any]) -> None:
        """Print the summary of a completed run."""
        self.close()
        print_summary(self.console, report)

    def holding(self, run: DemoRun) -> None:
        self.console.print(
            f"network left running: dashboard {run.registry_url}/dashboard, "
            f"API {run.registry_url}/docs. "
            "Press Ctrl-C to stop everything."
        )


def print_summary(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="groups formed")
    for col in ("group", "members (cluster)", "rounds", "accuracy", "purity"):
        table.add_column(col)
    for g in report["groups"]:
        members = ", ".join(f"{m['name']}({m['cluster']})" for m in g["members"])
        table.add_row(
            f"{g['group_id']} {g['name']}",
            members,
            str(g["round"] or "-"),
            _fmt(g["accuracy"]),
            _fmt(g["purity"], ".2f"),
        )
    console.print(table)
    nodes = Table(title="each node: local-only vs group model vs personal, on its own test data")
    for col in (
        "node",
        "cluster",
        "group",
        "local only",
        "group model",
        "personal",
        "gain over local",
    ):
        nodes.add_column(col)
    for n in report["nodes"]:
        local, grp = n["local_test_accuracy"], n["group_test_accuracy"]
        mine = n.get("personal_test_accuracy")
        used = mine if mine is not None else grp
        gain = None if local is None or used is None else used - local
        nodes.add_row(
            n["name"] + (" (misplaced)" if n["misplaced"] else ""),
            str(n["cluster"]),
            str(n["group_id"] or "-"),
            _fmt(local),
            _fmt(grp),
            _personal_cell(mine, n.get("uses_personal"), n.get("predicts_with")),
            _fmt(gain, "+.3f"),
        )
    console.print(nodes)
    for m in report["migrations"]:
        gain = _fmt(m.get("expected_gain"), "+.3f")
        console.print(
            f"migration: {m.get('node') or m['node_id']} group {m.get('from_group_id')} -> "
            f"{m.get('to_group_id')}, expected gain {gain} ({m.get('reason', '')})",
            soft_wrap=True,
        )
    t = report["timings"]
    console.print(
        f"wall time {t['wall_s']}s, peak memory {t['peak_pss_mb']} MB PSS (all processes); "
        f"report {report['report_path']}; figure {report['plot_path']}",
        soft_wrap=True,
    )


def _personal_cell(
    accuracy: float | None, uses_personal: bool | None, predicts_with: str | None = None
) -> str:
    """The accuracy of what the node predicts with; "(group)" when that is the group model
    (neither its personal nor its local model beat it on the node's validation split),
    "(local)" when it is the node's own local-only model, "(+local)" when its ensemble
    (``--personal ens``) holds its local-only model beside the group and personal ones."""
    if accuracy is None:
        return "-"
    if predicts_with == "local":
        return _fmt(accuracy) + " (local)"
    if predicts_with == "group+personal+local":
        return _fmt(accuracy) + " (+local)"
    return _fmt(accuracy) + ("" if uses_personal else " (group)")
