"""Reads, run as ``fn(conn, now, *args)`` after queued heartbeats are committed; rows come
out shaped like the API's resources, liveness derived from ``now``."""

from __future__ import annotations

import json
import sqlite3

from mycelium.registry.store.records import Model, Row
from mycelium.registry.store.schema import GROUP_COLUMNS, LIVE_MEMBERS, NODE_COLUMNS

ROUNDS_IN_DETAIL = 50


def fid_out(value: str | None) -> int | None:
    """Flower's uint64 node id is stored as TEXT (SQLite integers stop at 2^63 - 1)."""
    return int(value) if value is not None else None


def fid_in(value: int | None) -> str | None:
    return str(value) if value is not None else None


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
    }


def select_node(conn: sqlite3.Connection, now: float, node_id: int, ttl: float) -> Row | None:
    row = conn.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
    return node_out(row, now, ttl) if row is not None else None


def select_nodes(
    conn: sqlite3.Connection, now: float, group_id: int | None, alive: bool | None, ttl: float
) -> list[Row]:
    where, params = [], []
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


def group_out(row: sqlite3.Row, now: float, group_ttl: float) -> Row:
    return {
        "group_id": row["id"],
        "name": row["name"],
        "fleet_address": row["fleet_address"],
        "task": row["task"],
        "max_capacity": row["max_capacity"],
        "join_policy": row["join_policy"],
        "performance_threshold": row["performance_threshold"],
        "status": row["status"],
        "alive": row["status"] == "active" and now - row["last_report"] <= group_ttl,
        "num_members": row["num_members"],
        "accuracy": row["accuracy"],
        "loss": row["loss"],
        "round": row["round"],
        "has_model": row["model_sha256"] is not None,
        "model_sha256": row["model_sha256"],
        "fingerprint": row["fingerprint"],
        "strategy": row["strategy"],
        "strategy_params": json.loads(row["strategy_params"]),
        "last_report": row["last_report"],
        "created_at": row["created_at"],
    }


def select_groups(
    conn: sqlite3.Connection, now: float, include_dead: bool, node_ttl: float, group_ttl: float
) -> list[Row]:
    """Groups best first: accuracy desc (none last), live members desc, id."""
    sql = f"SELECT {GROUP_COLUMNS}, {LIVE_MEMBERS} AS num_members FROM groups g"
    if not include_dead:
        sql += " WHERE g.status = 'active' AND g.last_report >= :report_cut"
    sql += " ORDER BY g.accuracy IS NULL, g.accuracy DESC, num_members DESC, g.id"
    params = {"alive_cut": now - node_ttl, "report_cut": now - group_ttl}
    return [group_out(r, now, group_ttl) for r in conn.execute(sql, params)]


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
    detail = group_out(row, now, group_ttl)
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


def select_model_spec(conn: sqlite3.Connection, now: float, group_id: int) -> str | None:
    row = conn.execute("SELECT model_spec FROM groups WHERE id = ?", (group_id,)).fetchone()
    return row[0] if row is not None else None


def select_model(conn: sqlite3.Connection, now: float, group_id: int) -> Model | None:
    row = conn.execute("SELECT sha256, data FROM models WHERE group_id = ?", (group_id,)).fetchone()
    return Model(sha256=row[0], data=bytes(row[1])) if row is not None else None


def select_events(conn: sqlite3.Connection, now: float, since: int, limit: int) -> list[Row]:
    rows = conn.execute(
        "SELECT id, type, at, node_id, group_id, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (since, limit),
    )
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


def load_mirror(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
    """(node id, token hash, group, last_seen) per node and (id, token hash) per group."""
    nodes = conn.execute("SELECT id, token_hash, group_id, last_seen FROM nodes").fetchall()
    groups = conn.execute("SELECT id, token_hash FROM groups").fetchall()
    return nodes, groups
