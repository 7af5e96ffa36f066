"""Changes, each run inside one transaction as ``fn(conn, now, *args)`` (see ``engine``).

A refusal raises a :mod:`~mycelium.registry.store.errors` class; the engine then rolls back
the change alone. Every change appends its events to the ``events`` table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
from typing import Any

from mycelium.registry.store.errors import (
    ConflictError,
    ForbiddenError,
    LimitError,
    NotFoundError,
)
from mycelium.registry.store.records import GroupSpec, Model, RoundReport

Ttls = tuple[float, float]
"""(node_ttl, group_ttl) in seconds."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def derive_secret(key: str, label: str, chars: int = 43) -> str:
    """A secret derived from a create request's Idempotency-Key (HMAC-SHA256, URL-safe):
    every retry of that request is answered with the same token or invite code, and the
    registry stores only hashes, as for random ones."""
    digest = hmac.new(key.encode(), label.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:chars]


def _created_before(
    conn: sqlite3.Connection, table: str, idempotency_hash: str | None, same: dict[str, Any]
) -> int | None:
    """The id of the record an earlier request with this key created (None: no such
    request); 409 when that request created something else (a key reused)."""
    if idempotency_hash is None:
        return None
    columns = ", ".join(same)
    row = conn.execute(
        f"SELECT id, {columns} FROM {table} WHERE idempotency_hash = ?",  # noqa: S608
        (idempotency_hash,),
    ).fetchone()
    if row is None:
        return None
    if any(row[column] != value for column, value in same.items()):
        raise ConflictError("this Idempotency-Key was sent with another request")
    return int(row["id"])


def matches(secret: str | None, stored_hash: str | None) -> bool:
    """Constant-time check of ``secret`` against its stored sha256."""
    if secret is None or stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def event(
    conn: sqlite3.Connection,
    kind: str,
    at: float,
    *,
    node_id: int | None = None,
    group_id: int | None = None,
    **data: Any,
) -> None:
    conn.execute(
        "INSERT INTO events (type, at, node_id, group_id, data) VALUES (?, ?, ?, ?, ?)",
        (kind, at, node_id, group_id, json.dumps(data)),
    )


# -- nodes -------------------------------------------------------------------------------------


def insert_node(
    conn: sqlite3.Connection,
    now: float,
    name: str,
    address: str | None,
    num_samples: int,
    task: str,
    token_hash: str,
    idempotency_hash: str | None = None,
) -> tuple[int, float, bool]:
    """Insert a node; returns (id, now, created): not created when a request with the same
    idempotency key created it before (that node's id is returned)."""
    same = {"name": name, "token_hash": token_hash}
    earlier = _created_before(conn, "nodes", idempotency_hash, same)
    if earlier is not None:
        return earlier, now, False
    row = conn.execute(
        "INSERT INTO nodes (name, address, task, num_samples, token_hash, last_seen, created_at,"
        " idempotency_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (name, address, task, num_samples, token_hash, now, now, idempotency_hash),
    ).fetchone()
    node_id = int(row[0])
    event(conn, "node_registered", now, node_id=node_id, name=name, task=task)
    return node_id, now, True


def _node_row(conn: sqlite3.Connection, node_id: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT id, group_id, last_seen FROM nodes WHERE id = ?", (node_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"node {node_id} not found")
    return row


def _detach(conn: sqlite3.Connection, now: float, node: sqlite3.Row, node_ttl: float) -> None:
    """Take a node out of its group; the group counts as live now if the node was."""
    # A key belongs to one membership (Flower never re-registers a key): it goes too.
    conn.execute(
        "UPDATE nodes SET group_id = NULL, public_key = NULL, admitted_group = NULL, "
        "admitted_key = NULL WHERE id = ?",
        (node["id"],),
    )
    if node["group_id"] is not None and now - node["last_seen"] <= node_ttl:
        conn.execute(
            "UPDATE groups SET last_live_at = CASE WHEN last_live_at > ? THEN last_live_at "
            "ELSE ? END WHERE id = ?",
            (now, now, node["group_id"]),
        )


def delete_node(conn: sqlite3.Connection, now: float, node_id: int, node_ttl: float) -> None:
    node = _node_row(conn, node_id)
    _detach(conn, now, node, node_ttl)
    conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
    event(conn, "node_deleted", now, node_id=node_id, group_id=node["group_id"])


# -- groups and membership ---------------------------------------------------------------------


def insert_group(
    conn: sqlite3.Connection,
    now: float,
    spec: GroupSpec,
    hashes: tuple[str, str | None],
    creator: int | None,
    allowance: tuple[int, float],
    idempotency_hash: str | None = None,
) -> int:
    """Insert a group created by node ``creator`` (None: the operator).

    ``hashes`` are those of the group token and of the invite code; ``allowance`` is
    (live groups a node may own, group_ttl): a node at its allowance is refused. A group
    created before by a request with the same idempotency key is returned, not inserted.
    """
    same = {"token_hash": hashes[0], "creator_node_id": creator, "name": spec.name}
    earlier = _created_before(conn, "groups", idempotency_hash, same)
    if earlier is not None:
        return earlier
    if creator is not None:
        _check_allowance(conn, now, creator, allowance)
    token_hash, invite_hash = hashes
    row = conn.execute(
        "INSERT INTO groups (name, fleet_address, task, max_capacity, join_policy, "
        "performance_threshold, fingerprint, model_spec, strategy, strategy_params, "
        "token_hash, invite_hash, last_report, last_live_at, created_at, creator_node_id,"
        " certificate, last_alive, idempotency_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            spec.name,
            spec.fleet_address,
            spec.task,
            spec.max_capacity,
            spec.join_policy,
            spec.performance_threshold,
            spec.fingerprint,
            spec.model_spec,
            spec.strategy,
            spec.strategy_params,
            token_hash,
            invite_hash,
            now,
            now,
            now,
            creator,
            spec.certificate,
            now,
            idempotency_hash,
        ),
    ).fetchone()
    group_id = int(row[0])
    event(conn, "group_created", now, group_id=group_id, name=spec.name, by_node_id=creator)
    return group_id


def _check_allowance(
    conn: sqlite3.Connection, now: float, creator: int, allowance: tuple[int, float]
) -> None:
    most, group_ttl = allowance
    owned = conn.execute(
        "SELECT COUNT(*) FROM groups WHERE creator_node_id = ? AND status = 'active' "
        "AND last_alive >= ?",
        (creator, now - group_ttl),
    ).fetchone()[0]
    if owned >= most:
        raise LimitError(
            f"node {creator} already owns {owned} live groups (at most {most}); "
            "close one (DELETE /groups/{id}) or let it expire"
        )


def _joinable_group(
    conn: sqlite3.Connection,
    now: float,
    group_id: int,
    node_id: int,
    invite_code: str | None,
    ttls: Ttls,
) -> sqlite3.Row:
    """The group row if ``node_id`` may join it now; raises the refusal otherwise."""
    node_ttl, group_ttl = ttls
    group: sqlite3.Row | None = conn.execute(
        "SELECT id, status, max_capacity, join_policy, invite_hash, last_alive "
        "FROM groups WHERE id = ?",
        (group_id,),
    ).fetchone()
    if group is None:
        raise NotFoundError(f"group {group_id} not found")
    if group["status"] != "active" or now - group["last_alive"] > group_ttl:
        status = group["status"] if group["status"] != "active" else "not reporting"
        raise ConflictError(f"group {group_id} is {status}; it takes no members")
    if group["join_policy"] == "invite-only" and not matches(invite_code, group["invite_hash"]):
        raise ForbiddenError(f"group {group_id} is invite-only: a valid invite_code is needed")
    members = conn.execute(
        "SELECT COUNT(*) FROM nodes WHERE group_id = ? AND last_seen >= ? AND id != ?",
        (group_id, now - node_ttl, node_id),
    ).fetchone()[0]
    if members >= group["max_capacity"]:
        raise ConflictError(f"group {group_id} is full ({members}/{group['max_capacity']})")
    return group


def _attach(
    conn: sqlite3.Connection,
    now: float,
    node_id: int,
    group_id: int,
    fid: str | None,
    public_key: str | None = None,
) -> None:
    # An accuracy reported in another group (or alone) says nothing about this group's
    # model: cleared, so the group's verified accuracy only counts reports made in it.
    # A new ``public_key`` is the key of this membership (the old receipt no longer holds).
    conn.execute(
        "UPDATE nodes SET group_id = ?, last_seen = ?, "
        "flower_node_id = COALESCE(?, flower_node_id), "
        "accuracy = CASE WHEN group_id IS NOT DISTINCT FROM ? THEN accuracy END, "
        "public_key = COALESCE(?, public_key) WHERE id = ?",
        (group_id, now, fid, group_id, public_key, node_id),
    )
    conn.execute("UPDATE groups SET last_live_at = ? WHERE id = ?", (now, group_id))


def join(
    conn: sqlite3.Connection,
    now: float,
    group_id: int,
    node_id: int,
    invite_code: str | None,
    fid: str | None,
    ttls: Ttls,
    public_key: str | None = None,
) -> float:
    node = _node_row(conn, node_id)
    if node["group_id"] is not None and node["group_id"] != group_id:
        raise ConflictError(
            f"node {node_id} is in group {node['group_id']}: leave or migrate first",
            group_id=node["group_id"],
        )
    _joinable_group(conn, now, group_id, node_id, invite_code, ttls)
    _attach(conn, now, node_id, group_id, fid, public_key)
    if node["group_id"] is None:
        event(conn, "joined", now, node_id=node_id, group_id=group_id)
    return now


def leave(
    conn: sqlite3.Connection, now: float, group_id: int, node_id: int, node_ttl: float
) -> float:
    node = _node_row(conn, node_id)
    if node["group_id"] != group_id:
        raise ConflictError(
            f"node {node_id} is not a member of group {group_id}", group_id=node["group_id"]
        )
    _detach(conn, now, node, node_ttl)
    event(conn, "left", now, node_id=node_id, group_id=group_id)
    return now


def migrate(
    conn: sqlite3.Connection,
    now: float,
    node_id: int,
    move: tuple[int, str | None, str, float],
    ttls: Ttls,
    public_key: str | None = None,
) -> tuple[int | None, float]:
    """Leave + join (with the new membership's key); returns the group the node came from."""
    to_group_id, invite_code, reason, expected_gain = move
    node = _node_row(conn, node_id)
    if node["group_id"] == to_group_id:
        raise ConflictError(
            f"node {node_id} is already in group {to_group_id}", group_id=to_group_id
        )
    _joinable_group(conn, now, to_group_id, node_id, invite_code, ttls)
    _detach(conn, now, node, ttls[0])
    _attach(conn, now, node_id, to_group_id, None, public_key)
    event(
        conn,
        "migrated",
        now,
        node_id=node_id,
        group_id=to_group_id,
        from_group_id=node["group_id"],
        to_group_id=to_group_id,
        reason=reason,
        expected_gain=expected_gain,
    )
    return node["group_id"], now


# -- admission (docs/security.md) ---------------------------------------------------------------


def set_public_key(conn: sqlite3.Connection, now: float, node_id: int, public_key: str) -> None:
    """A new key for the node's current membership (e.g. its SuperNode restarted)."""
    node = _node_row(conn, node_id)
    if node["group_id"] is None:
        raise ConflictError(f"node {node_id} is in no group: a key belongs to a membership")
    conn.execute("UPDATE nodes SET public_key = ? WHERE id = ?", (public_key, node_id))


def admit(
    conn: sqlite3.Connection,
    now: float,
    group_id: int,
    node_id: int,
    public_key: str,
    fid: str,
) -> None:
    """The host's receipt: ``public_key`` of member ``node_id`` is registered on the
    group's SuperLink as Flower node ``fid``. Refused unless that is the member's key now."""
    row = conn.execute("SELECT group_id, public_key FROM nodes WHERE id = ?", (node_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"node {node_id} not found")
    if row["group_id"] != group_id:
        raise ConflictError(f"node {node_id} is not a member of group {group_id}")
    if row["public_key"] != public_key:
        raise ConflictError(f"node {node_id} has another key now; admit its current key")
    conn.execute(
        "UPDATE nodes SET admitted_group = ?, admitted_key = ?, flower_node_id = ? WHERE id = ?",
        (group_id, public_key, fid, node_id),
    )


# -- the coordinator's reports -----------------------------------------------------------------


def report(conn: sqlite3.Connection, now: float, group_id: int) -> None:
    """Refresh a group's last_report (a failed group whose coordinator is back is active)."""
    status = conn.execute("SELECT status FROM groups WHERE id = ?", (group_id,)).fetchone()
    if status is None:
        raise NotFoundError(f"group {group_id} not found")
    if status[0] == "dissolved":
        raise ConflictError(f"group {group_id} is dissolved")
    conn.execute(
        "UPDATE groups SET last_report = ?, last_alive = ?, status = 'active' WHERE id = ?",
        (now, now, group_id),
    )


def insert_round(conn: sqlite3.Connection, now: float, group_id: int, r: RoundReport) -> None:
    """Record a round; the same report again (a retry after a lost answer) changes nothing
    but the group's last report time."""
    report(conn, now, group_id)
    if _round_recorded(conn, group_id, r):
        return
    conn.execute(
        "INSERT INTO rounds (group_id, round, accuracy, loss, num_nodes, num_examples, "
        "reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (group_id, r.round, r.accuracy, r.loss, r.num_nodes, r.num_examples, now),
    )
    conn.execute(
        "UPDATE groups SET accuracy = ?, loss = ?, round = ? WHERE id = ?",
        (r.accuracy, r.loss, r.round, group_id),
    )


def _round_recorded(conn: sqlite3.Connection, group_id: int, r: RoundReport) -> bool:
    """True when the group's latest report is this one (round and every figure equal)."""
    row = conn.execute(
        "SELECT round, accuracy, loss, num_nodes, num_examples FROM rounds "
        "WHERE group_id = ? ORDER BY id DESC LIMIT 1",
        (group_id,),
    ).fetchone()
    return row is not None and tuple(row) == (
        r.round,
        r.accuracy,
        r.loss,
        r.num_nodes,
        r.num_examples,
    )


def upsert_model(conn: sqlite3.Connection, now: float, group_id: int, model: Model) -> None:
    report(conn, now, group_id)
    conn.execute(
        "INSERT INTO models (group_id, sha256, data, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(group_id) DO UPDATE SET sha256 = excluded.sha256, data = excluded.data, "
        "updated_at = excluded.updated_at",
        (group_id, model.sha256, model.data, now),
    )
    conn.execute("UPDATE groups SET model_sha256 = ? WHERE id = ?", (model.sha256, group_id))


# -- the end of groups -------------------------------------------------------------------------


def dissolve(conn: sqlite3.Connection, now: float, group_id: int, reason: str) -> list[int]:
    """Detach every member (evicted events), mark the group dissolved; returns the members."""
    members = [r[0] for r in conn.execute("SELECT id FROM nodes WHERE group_id = ?", (group_id,))]
    conn.execute(
        "UPDATE nodes SET group_id = NULL, public_key = NULL, admitted_group = NULL, "
        "admitted_key = NULL WHERE group_id = ?",
        (group_id,),
    )
    conn.execute("UPDATE groups SET status = 'dissolved' WHERE id = ?", (group_id,))
    for node_id in members:
        event(conn, "evicted", now, node_id=node_id, group_id=group_id, reason="dissolved")
    event(conn, "dissolved", now, group_id=group_id, detached=members, reason=reason)
    return members


def close_group(conn: sqlite3.Connection, now: float, group_id: int) -> list[int]:
    """Dissolve at once (idempotent); returns the detached members."""
    status = conn.execute("SELECT status FROM groups WHERE id = ?", (group_id,)).fetchone()
    if status is not None and status[0] == "dissolved":
        return []
    return dissolve(conn, now, group_id, "closed by its host")


def set_state(conn: sqlite3.Connection, now: float, key: str, value: float | None) -> None:
    """Set (or, with None, remove) a value of ``registry_state``."""
    if value is None:
        conn.execute("DELETE FROM registry_state WHERE key = ?", (key,))
        return
    conn.execute(
        "INSERT INTO registry_state (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
