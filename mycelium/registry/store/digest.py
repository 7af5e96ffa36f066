"""The dashboard's digest of the events log, run as ``fn(conn, now, ...)`` like ``reads``:
what the page would otherwise rebuild by replaying the whole log when it opens."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from mycelium.dashboard.sources import HISTORY_TYPES, PRESERVATION_TYPES, LogDigest
from mycelium.registry.store.reads import EVENT_COLUMNS, event_rows
from mycelium.registry.store.records import Row


def _named_nodes(events: list[Row]) -> tuple[int, ...]:
    """The nodes these events name: each event's node, and a group's founder."""
    ids = {e["node_id"] for e in events} | {e["data"].get("by_node_id") for e in events}
    return tuple(sorted(i for i in ids if isinstance(i, int)))


def _marks(values: tuple[Any, ...]) -> str:
    return ", ".join("?" * len(values))


def select_log_digest(
    conn: sqlite3.Connection, now: float, recent: int, per_node: int
) -> LogDigest:
    """The dashboard's digest of the log (:class:`LogDigest`) up to its last event.

    The last id is read first and every other statement stops at it, so the digest is the
    log up to that id even where statements see different moments (PostgreSQL's autocommit
    reads; its writers make ids visible in id order), and the events after it are exactly
    what ``GET /events/stream?after=`` that id sends. Each statement reads the log once
    (no index on ``type`` or ``node_id``): on the order of milliseconds per 100,000 events.
    """
    last = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
    tail = event_rows(
        conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id <= ? ORDER BY id DESC LIMIT ?",
            (last, recent),
        )
    )[::-1]
    history = event_rows(
        conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM (SELECT {EVENT_COLUMNS}, ROW_NUMBER() OVER "
            "(PARTITION BY node_id ORDER BY id DESC) AS nth FROM events WHERE id <= ? "
            f"AND type IN ({_marks(HISTORY_TYPES)}) AND node_id IN (SELECT id FROM nodes)) h "
            "WHERE nth <= ? ORDER BY id",
            (last, *HISTORY_TYPES, per_node),
        )
    )
    migrations = conn.execute(
        "SELECT COUNT(*) FROM events WHERE id <= ? AND type = 'migrated'", (last,)
    ).fetchone()[0]
    marks = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id <= ? AND type IN "
        f"({_marks(PRESERVATION_TYPES)}) ORDER BY id DESC LIMIT 1",
        (last, *PRESERVATION_TYPES),
    )
    preservation = next(iter(event_rows(marks)), None)
    named = _named_nodes(tail)
    names: dict[int, str] = {}
    if named:
        registered = conn.execute(
            "SELECT node_id, data FROM events WHERE id <= ? AND type = 'node_registered' "
            f"AND node_id IN ({_marks(named)})",
            (last, *named),
        )
        names = {int(r[0]): str(json.loads(r[1]).get("name")) for r in registered}
    return LogDigest(
        last_id=last,
        recent=tail,
        history=history,
        migrations=int(migrations),
        preservation=preservation,
        node_names=names,
    )
