"""Tables, indexes, their versions, and the column lists the statements share.

The tables are written once, in SQLite's spelling; :func:`postgres_ddl` turns them into
PostgreSQL's (identity keys, double precision, bytea). A database records the last
:data:`MIGRATIONS` step it ran in ``schema_version``; a file made before that table existed
(version 0) runs every step, each idempotent. :data:`ADDED_COLUMNS` are added at every open
where missing (additive only), so a new column is one line there.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    fleet_address TEXT NOT NULL,
    task TEXT NOT NULL,
    max_capacity INTEGER NOT NULL,
    join_policy TEXT NOT NULL,
    performance_threshold REAL NOT NULL,
    token_hash TEXT NOT NULL,
    invite_hash TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    accuracy REAL,
    loss REAL,
    round INTEGER,
    model_sha256 TEXT,
    certificate TEXT,
    fingerprint TEXT,
    model_spec TEXT,
    strategy TEXT NOT NULL DEFAULT 'fedavg',
    strategy_params TEXT NOT NULL DEFAULT '{}',
    last_report REAL NOT NULL,
    last_live_at REAL NOT NULL,
    created_at REAL NOT NULL,
    creator_node_id INTEGER
);
CREATE INDEX IF NOT EXISTS groups_status_task ON groups(status, task);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    address TEXT,
    task TEXT NOT NULL,
    num_samples INTEGER NOT NULL,
    token_hash TEXT NOT NULL,
    group_id INTEGER REFERENCES groups(id),
    flower_node_id TEXT,
    accuracy REAL,
    loss REAL,
    round INTEGER,
    last_seen REAL NOT NULL,
    created_at REAL NOT NULL,
    public_key TEXT,
    admitted_group INTEGER,
    admitted_key TEXT
);
-- group_id alone: an index holding last_seen too would be rewritten by every heartbeat
-- flush (measured 3x slower flushes); a group's few rows are filtered by last_seen cheaply.
DROP INDEX IF EXISTS nodes_group_seen;
CREATE INDEX IF NOT EXISTS nodes_group ON nodes(group_id);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL REFERENCES groups(id),
    round INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    loss REAL NOT NULL,
    num_nodes INTEGER NOT NULL,
    num_examples INTEGER NOT NULL,
    reported_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rounds_group ON rounds(group_id, id);
CREATE TABLE IF NOT EXISTS models (
    group_id INTEGER PRIMARY KEY REFERENCES groups(id),
    sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    at REAL NOT NULL,
    node_id INTEGER,
    group_id INTEGER,
    data TEXT NOT NULL
);
-- The registry's own facts: ``last_sweep`` (unix s) tells a restarted registry how long it
-- was away (docs/architecture.md, "Failure cases").
CREATE TABLE IF NOT EXISTS registry_state (
    key TEXT PRIMARY KEY,
    value REAL NOT NULL
);
"""

ADDED_COLUMNS = (
    ("groups", "creator_node_id", "INTEGER"),
    ("groups", "certificate", "TEXT"),
    ("groups", "fingerprint", "TEXT"),
    ("groups", "model_spec", "TEXT"),
    ("groups", "strategy", "TEXT NOT NULL DEFAULT 'fedavg'"),
    ("groups", "strategy_params", "TEXT NOT NULL DEFAULT '{}'"),
    # Admission (docs/security.md): the key of the node's current membership, and the
    # receipt its group's host wrote (group, key; the Flower id goes in flower_node_id).
    ("nodes", "public_key", "TEXT"),
    ("nodes", "admitted_group", "INTEGER"),
    ("nodes", "admitted_key", "TEXT"),
    # A group's last sign of training: its host's report or its members vouching (NULL in an
    # older file until it opens: filled from last_report), and the round they vouched for.
    ("groups", "last_alive", "REAL"),
    ("groups", "vouched_round", "INTEGER"),
    # The test accuracy of the model the node predicts with (its personal model or its
    # group's), as its last heartbeat said (NULL when that beat had none).
    ("nodes", "personal_accuracy", "REAL"),
    # sha256 of the Idempotency-Key a node or group was created with: a retried create finds
    # its record instead of making a second one (docs/registry.md, "Failover").
    ("groups", "idempotency_hash", "TEXT"),
    ("nodes", "idempotency_hash", "TEXT"),
)
"""Columns added after the first release: added to an older file at open (table, name, type)."""

INDEXES_ON_ADDED = """
CREATE INDEX IF NOT EXISTS groups_creator ON groups(creator_node_id);
CREATE UNIQUE INDEX IF NOT EXISTS groups_idempotency ON groups(idempotency_hash);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_idempotency ON nodes(idempotency_hash);
-- The dashboard's digest of the log (store/digest.py): a node's history, a type's events.
CREATE INDEX IF NOT EXISTS events_node ON events(node_id, id);
CREATE INDEX IF NOT EXISTS events_type ON events(type, id);
UPDATE groups SET last_alive = last_report WHERE last_alive IS NULL;
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "tables of the first release", SCHEMA),
    # A node's token is looked up by hash in the database when several processes share it
    # (no in-process mirror there): the operator-or-node check of group creation.
    (2, "index of node tokens", "CREATE INDEX IF NOT EXISTS nodes_token ON nodes(token_hash);"),
)
"""Ordered steps (version, what, DDL in SQLite's spelling); the last version is the schema's."""

SCHEMA_VERSION = MIGRATIONS[-1][0]

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"

_PG_TYPES = (
    ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (" INTEGER", " BIGINT"),
    (" REAL", " DOUBLE PRECISION"),
    (" BLOB", " BYTEA"),
)


def postgres_ddl(ddl: str) -> str:
    """``ddl`` (SQLite's spelling, as above) in PostgreSQL's."""
    for sqlite_type, pg_type in _PG_TYPES:
        ddl = ddl.replace(sqlite_type, pg_type)
    return ddl


NODE_COLUMNS = (
    "id, name, address, task, num_samples, group_id, flower_node_id, accuracy, loss, round, "
    "last_seen, created_at, personal_accuracy"
)
GROUP_COLUMNS = (
    "g.id, g.name, g.fleet_address, g.task, g.max_capacity, g.join_policy, "
    "g.performance_threshold, g.status, g.accuracy, g.loss, g.round, g.model_sha256, "
    "g.fingerprint, g.strategy, g.strategy_params, g.last_report, g.created_at, g.certificate, "
    "g.last_alive"
)
FLUSH_SQL = (
    "UPDATE nodes SET last_seen = ?, accuracy = COALESCE(?, accuracy), "
    "loss = COALESCE(?, loss), num_samples = ?, round = COALESCE(?, round), "
    "flower_node_id = COALESCE(?, flower_node_id), personal_accuracy = ? WHERE id = ?"
)
"""One queued heartbeat: (last_seen, accuracy, loss, num_samples, round, fid,
personal_accuracy, node_id)."""

LIVE_MEMBERS = (
    "(SELECT COUNT(*) FROM nodes n WHERE n.group_id = g.id AND n.last_seen >= :alive_cut)"
)
