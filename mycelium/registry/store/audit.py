"""A read-only look at a stopped (or running) registry's SQLite file, for checks after a run
(bench faults): the store stays the only code that opens the database."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Audit:
    """What a run left in the database."""

    integrity: str
    """``PRAGMA integrity_check``: ``ok`` for a sound file."""
    nodes: dict[int, int | None]
    """node id -> group id."""
    groups: frozenset[int]
    events: tuple[tuple[str, float, int | None, int | None], ...]
    """(type, at, node_id, group_id), in id order."""
    rounds: tuple[tuple[int, int], ...]
    """(group_id, round) of every stored round report, in id order."""


def audit(db: Path) -> Audit:
    """Read ``db`` (opened read-only: a running registry is not disturbed)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        nodes = {int(i): g for i, g in conn.execute("SELECT id, group_id FROM nodes")}
        groups = frozenset(int(row[0]) for row in conn.execute("SELECT id FROM groups"))
        events = conn.execute("SELECT type, at, node_id, group_id FROM events ORDER BY id")
        rounds = conn.execute("SELECT group_id, round FROM rounds ORDER BY id")
        return Audit(integrity, nodes, groups, tuple(events), tuple(rounds))
