"""Reads, run as ``fn(conn, now, *args)`` after queued heartbeats are committed; rows come
out shaped like the API's resources, liveness derived from ``now``."""

from __future__ import annotations

import json
import sqlite3
import statistics
from typing import Any

from mycelium.dashboard.sources import GroupFigures, NetworkStats
from mycelium.registry.store.records import Heartbeat, Model, Row
from mycelium.registry.store.schema import GROUP_COLUMNS, LIVE_MEMBERS, NODE_COLUMNS

ROUNDS_IN_DETAIL = 50


def fid_out(value: str | None) -> int | None:
    """Flower's uint64 node id is stored as TEXT (SQLite integers stop at 2^63 - 1)."""
    return int(value) if value is not None else None


def fid_in(value: int | None) -> str | None:
    return str(value) if value is not None else None


def beat_values(beat: Heartbeat, now: float) -> tuple[Any, ...]:
    """The parameters of ``schema.FLUSH_SQL`` for one heartbeat received at ``now``."""
    fid = fid_in(beat.flower_node_id)
    return (
        now,
        beat.accuracy,
        beat.loss,
        beat.num_samples,
        beat.round,
        fid,
        beat.personal_accuracy,
        beat.node_id,
    )


def node_out(row: sqlite3.Row, now: float, node_ttl: float) -> Row:
    return {
        "node_id": row["id"],
        "name": row["name"],
        "address": row["address"],
        "task": row["task"],
        "num_samples": row["num_samples"],
        "group_id": row["group_id"],
        "flower_node_id": fid_out(row["flower_node_id"]),
        "accuracy": row["accuracy"],
        "loss": row["loss"],
        "round": row["round"],
        "last_seen": row["last_seen"],
        "alive": now - row["last_seen"] <= node_ttl,
        "created_at": row["created_at"],
        "personal_accuracy": row["personal_accuracy"],
    }


def select_node(conn: sqlite3.Connection, now: float, node_id: int, ttl: float) -> Row | None:
    row = conn.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
    return node_out(row, now, ttl) if row is not None else None


def select_nodes(
    conn: sqlite3.Connection, now: float, group_id: int | None, alive: bool | None, ttl: float
) -> list[Row]:
    where: list[str] = []
    params: list[float] = []
    if group_id is not None:
        where.append("group_id = ?")
        params.append(group_id)
    if alive is not None:
        where.append("last_seen >= ?" if alive else "last_seen < ?")
        params.append(now - ttl)
    sql = f"SELECT {NODE_COLUMNS} FROM nodes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [node_out(r, now, ttl) for r in conn.execute(sql + " ORDER BY id", params)]


def group_out(
    row: sqlite3.Row, now: float, group_ttl: float, reports: list[float] | None = None
) -> Row:
    """A group as the API shows it: ``accuracy`` is the group's own claim (its round
    reports), ``verified_accuracy`` the median of what its live members report for its model
    on their own data, resting on ``verified_members`` reports (None / 0 without any)."""
    reports = reports or []
    return {
        "group_id": row["id"],
        "name": row["name"],
        "fleet_address": row["fleet_address"],
        "task": row["task"],
        "max_capacity": row["max_capacity"],
        "join_policy": row["join_policy"],
        "performance_threshold": row["performance_threshold"],
        "status": row["status"],
        "alive": row["status"] == "active" and now - row["last_alive"] <= group_ttl,
        "num_members": row["num_members"],
        "accuracy": row["accuracy"],
        "verified_accuracy": statistics.median(reports) if reports else None,
        "verified_members": len(reports),
        "loss": row["loss"],
        "round": row["round"],
        "has_model": row["model_sha256"] is not None,
        "model_sha256": row["model_sha256"],
        "fingerprint": row["fingerprint"],
        "strategy": row["strategy"],
        "strategy_params": json.loads(row["strategy_params"]),
        "last_report": row["last_report"],
        "created_at": row["created_at"],
        "certificate": row["certificate"],
    }


def member_reports(
    conn: sqlite3.Connection, alive_cut: float, group_id: int | None = None
) -> dict[int, list[float]]:
    """Group -> the accuracies its live members reported for its model. A node's accuracy is
    cleared when it changes group (``writes._attach``), and a heartbeat naming another group
    is refused, so every report counted here was made by a member about this group."""
    sql = (
        "SELECT group_id, accuracy FROM nodes WHERE group_id IS NOT NULL "
        "AND accuracy IS NOT NULL AND last_seen >= ?"
    )
    params: tuple[float, ...] | tuple[float, int] = (alive_cut,)
    if group_id is not None:
        sql += " AND group_id = ?"
        params = (alive_cut, group_id)
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: a third faster than sqlite3.Row on 10k rows
    reports: dict[int, list[float]] = {}
    for gid, accuracy in cursor.execute(sql, params):
        reports.setdefault(gid, []).append(accuracy)
    return reports


def discovery_key(group: Row) -> tuple[bool, float, int]:
    """Verified accuracy first (none last), then how many members it rests on; a stable
    sort on this keeps the claim's order (accuracy desc, live members desc, id) for ties."""
    verified = group["verified_accuracy"]
    return (verified is None, -(verified or 0.0), -group["verified_members"])


def select_groups(
    conn: sqlite3.Connection, now: float, include_dead: bool, node_ttl: float, group_ttl: float
) -> list[Row]:
    """Groups best first by :func:`discovery_key`, then by their claim: accuracy desc (none
    last), live members desc, id."""
    sql = f"SELECT {GROUP_COLUMNS}, {LIVE_MEMBERS} AS num_members FROM groups g"
    if not include_dead:
        sql += " WHERE g.status = 'active' AND g.last_alive >= :report_cut"
    sql += " ORDER BY g.accuracy IS NULL, g.accuracy DESC, num_members DESC, g.id"
    params = {"alive_cut": now - node_ttl, "report_cut": now - group_ttl}
    reports = member_reports(conn, now - node_ttl)
    groups = [group_out(r, now, group_ttl, reports.get(r["id"])) for r in conn.execute(sql, params)]
    return sorted(groups, key=discovery_key)


def filter_groups(
    groups: list[Row],
    task: str | None,
    has_capacity: bool | None,
    fingerprint: str | None = None,
    strategy: str | None = None,
) -> list[Row]:
    for key, wanted in (("task", task), ("fingerprint", fingerprint), ("strategy", strategy)):
        if wanted is not None:
            groups = [g for g in groups if g[key] == wanted]
    if has_capacity is not None:
        groups = [g for g in groups if (g["num_members"] < g["max_capacity"]) == has_capacity]
    return groups


def select_group_detail(
    conn: sqlite3.Connection, now: float, group_id: int, node_ttl: float, group_ttl: float
) -> Row | None:
    params = {"alive_cut": now - node_ttl, "id": group_id}
    sql = f"SELECT {GROUP_COLUMNS}, {LIVE_MEMBERS} AS num_members FROM groups g WHERE g.id = :id"
    row = conn.execute(sql, params).fetchone()
    if row is None:
        return None
    reports = member_reports(conn, now - node_ttl, group_id).get(group_id)
    detail = group_out(row, now, group_ttl, reports)
    spec = conn.execute("SELECT model_spec FROM groups WHERE id = ?", (group_id,)).fetchone()[0]
    detail["model_spec"] = json.loads(spec) if spec else None
    detail["members"] = select_nodes(conn, now, group_id, None, node_ttl)
    rounds = conn.execute(
        "SELECT round, accuracy, loss, num_nodes, num_examples, reported_at FROM rounds "
        "WHERE group_id = ? ORDER BY id DESC LIMIT ?",
        (group_id, ROUNDS_IN_DETAIL),
    ).fetchall()
    detail["rounds"] = [dict(r) for r in reversed(rounds)]
    return detail


def select_members(
    conn: sqlite3.Connection, now: float, group_id: int, node_ttl: float
) -> list[Row]:
    """The group's members with the key of their membership (for its host's admission)."""
    rows = conn.execute(
        "SELECT id, public_key, last_seen FROM nodes WHERE group_id = ? ORDER BY id", (group_id,)
    )
    return [
        {
            "node_id": r["id"],
            "public_key": r["public_key"],
            "alive": now - r["last_seen"] <= node_ttl,
        }
        for r in rows
    ]


def select_admission(conn: sqlite3.Connection, now: float, node_id: int) -> Row | None:
    """The node's admission receipt; ``admitted`` only for its current group and key."""
    row = conn.execute(
        "SELECT id, group_id, public_key, admitted_group, admitted_key, flower_node_id "
        "FROM nodes WHERE id = ?",
        (node_id,),
    ).fetchone()
    if row is None:
        return None
    admitted = (
        row["group_id"] is not None
        and row["public_key"] is not None
        and row["admitted_group"] == row["group_id"]
        and row["admitted_key"] == row["public_key"]
    )
    return {
        "node_id": row["id"],
        "group_id": row["group_id"],
        "public_key": row["public_key"],
        "admitted": admitted,
        "flower_node_id": fid_out(row["flower_node_id"]) if admitted else None,
    }


def select_model_spec(conn: sqlite3.Connection, now: float, group_id: int) -> str | None:
    row = conn.execute("SELECT model_spec FROM groups WHERE id = ?", (group_id,)).fetchone()
    return row[0] if row is not None else None


def select_model(conn: sqlite3.Connection, now: float, group_id: int) -> Model | None:
    row = conn.execute("SELECT sha256, data FROM models WHERE group_id = ?", (group_id,)).fetchone()
    return Model(sha256=row[0], data=bytes(row[1])) if row is not None else None


EVENT_COLUMNS = "id, type, at, node_id, group_id, data"


def event_rows(rows: Any) -> list[Row]:
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


def select_events(conn: sqlite3.Connection, now: float, since: int, limit: int) -> list[Row]:
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?", (since, limit)
    )
    return event_rows(rows)


def load_mirror(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
    """(node id, token hash, group, last_seen) per node and (id, token hash) per group."""
    nodes = conn.execute("SELECT id, token_hash, group_id, last_seen FROM nodes").fetchall()
    groups = conn.execute("SELECT id, token_hash FROM groups").fetchall()
    return nodes, groups


def select_stats(
    conn: sqlite3.Connection, now: float, node_ttl: float, group_ttl: float
) -> NetworkStats:
    """Counts for ``/metrics``, liveness derived as in the API's resources."""
    alive_cut, report_cut = now - node_ttl, now - group_ttl
    registered, alive = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN last_seen >= ? THEN 1 ELSE 0 END), 0) FROM nodes",
        (alive_cut,),
    ).fetchone()
    by_status = {status: 0 for status in ("active", "failed", "dissolved")}
    by_status |= dict(conn.execute("SELECT status, COUNT(*) FROM groups GROUP BY status"))
    groups_alive = conn.execute(
        "SELECT COUNT(*) FROM groups WHERE status = 'active' AND last_alive >= ?", (report_cut,)
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


def select_node_auth(
    conn: sqlite3.Connection, now: float, node_id: int
) -> tuple[str, int | None, float] | None:
    """(token hash, group, last_seen) of a node: what checking its token needs."""
    row = conn.execute(
        "SELECT token_hash, group_id, last_seen FROM nodes WHERE id = ?", (node_id,)
    ).fetchone()
    return (row[0], row[1], row[2]) if row is not None else None


def select_group_token(conn: sqlite3.Connection, now: float, group_id: int) -> str | None:
    row = conn.execute("SELECT token_hash FROM groups WHERE id = ?", (group_id,)).fetchone()
    return str(row[0]) if row is not None else None


def select_node_by_token(conn: sqlite3.Connection, now: float, token_hash: str) -> int | None:
    row = conn.execute("SELECT id FROM nodes WHERE token_hash = ?", (token_hash,)).fetchone()
    return int(row[0]) if row is not None else None


def ping(conn: sqlite3.Connection, now: float) -> None:
    """One statement the database must answer (the health check)."""
    conn.execute("SELECT 1").fetchone()


def select_state(conn: sqlite3.Connection, now: float, key: str) -> float | None:
    """A value of ``registry_state`` (e.g. ``preserving_since``), None if absent."""
    row = conn.execute("SELECT value FROM registry_state WHERE key = ?", (key,)).fetchone()
    return float(row[0]) if row is not None else None
