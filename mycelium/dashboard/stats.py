"""Figures about the whole network for ``GET /metrics``, read in one go from SQLite.

``select_stats`` follows the storage's read convention ``fn(conn, now, *args)`` and is run by
``SqliteStorage.stats`` (it belongs with the storage's reads; it lives here so the dashboard
stays in files of its own). Counts are derived like the API's: a node is alive while
``now - last_seen <= node_ttl``, a group while it is active and has reported within
``group_ttl``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupFigures:
    group_id: int
    live_members: int
    max_capacity: int


@dataclass(frozen=True)
class NetworkStats:
    nodes_registered: int
    nodes_alive: int
    groups_by_status: dict[str, int]
    groups_alive: int
    groups: tuple[GroupFigures, ...]
    """Groups not dissolved, with their live members."""
    models_stored: int
    model_bytes: int


def select_stats(
    conn: sqlite3.Connection, now: float, node_ttl: float, group_ttl: float
) -> NetworkStats:
    alive_cut, report_cut = now - node_ttl, now - group_ttl
    registered, alive = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(last_seen >= ?), 0) FROM nodes", (alive_cut,)
    ).fetchone()
    by_status = {status: 0 for status in ("active", "failed", "dissolved")}
    by_status |= dict(conn.execute("SELECT status, COUNT(*) FROM groups GROUP BY status"))
    groups_alive = conn.execute(
        "SELECT COUNT(*) FROM groups WHERE status = 'active' AND last_report >= ?", (report_cut,)
    ).fetchone()[0]
    groups = conn.execute(
        "SELECT g.id, COUNT(n.id), g.max_capacity FROM groups g "
        "LEFT JOIN nodes n ON n.group_id = g.id AND n.last_seen >= ? "
        "WHERE g.status != 'dissolved' GROUP BY g.id ORDER BY g.id",
        (alive_cut,),
    ).fetchall()
    # length() of a blob reads its size from the record header, not the blob itself.
    models, model_bytes = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM models"
    ).fetchone()
    return NetworkStats(
        nodes_registered=registered,
        nodes_alive=alive,
        groups_by_status=by_status,
        groups_alive=groups_alive,
        groups=tuple(GroupFigures(*row) for row in groups),
        models_stored=models,
        model_bytes=model_bytes,
    )
