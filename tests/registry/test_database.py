"""The registry's databases: schema versions (a file of today's schema opens and migrates,
a newer schema is refused), the PostgreSQL URL rules, and a database out of reach."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from mycelium.client.registry import IDEMPOTENCY_HEADER, new_idempotency_key
from mycelium.procs import free_port, wait_for
from mycelium.registry.store.schema import ADDED_COLUMNS, MIGRATIONS, SCHEMA_VERSION
from mycelium.registry.store.writes import derive_secret, hash_secret
from tests.conftest import ENTRYPOINT, auth, registry_app
from tests.postgres import PgServer, missing_reason, postgres_server, query


def _registry(db: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``registry --db DB`` and return once it exits (it must, here)."""
    args = [sys.executable, str(ENTRYPOINT), "registry", "--db", db, "--port", str(free_port())]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )


def _file_of_todays_schema(path: Path) -> None:
    """A file as the registry wrote it before schema versions: its tables and added
    columns, no ``schema_version`` table, one node."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(MIGRATIONS[0][2])
        for table, column, kind in ADDED_COLUMNS:
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        conn.execute(
            "INSERT INTO nodes (name, task, num_samples, token_hash, last_seen, created_at) "
            "VALUES ('old', 'digits', 3, 'x', 1800000000, 1800000000)"
        )
        conn.commit()


def test_a_file_of_todays_schema_opens_and_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _file_of_todays_schema(db)
    with registry_app(db) as api:
        assert api.get("/nodes/1").json()["name"] == "old"
        assert api.post("/nodes", json={"name": "new", "num_samples": 1}).status_code == 201
    assert query(db, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    indexes = {row[0] for row in query(db, "SELECT name FROM sqlite_master WHERE type='index'")}
    assert "nodes_token" in indexes


def test_a_newer_schema_is_refused_in_one_line(database: Path | str, tmp_path: Path) -> None:
    with registry_app(database) as api:
        assert api.post("/nodes", json={"name": "n", "num_samples": 1}).status_code == 201
    if isinstance(database, Path):
        with closing(sqlite3.connect(database)) as conn:
            conn.execute("UPDATE schema_version SET version = 999")
            conn.commit()
    else:
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = 999")
    done = _registry(str(database), tmp_path)
    assert done.returncode == 1
    assert "schema version 999 is newer" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_password_in_the_url_is_refused_and_never_shown(tmp_path: Path) -> None:
    done = _registry("postgresql://mycelium:s3cr3t-pw@127.0.0.1:5432/mycelium", tmp_path)
    assert done.returncode == 1
    assert "PGPASSWORD" in done.stderr and "s3cr3t-pw" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unreachable_database_exits_1_in_one_line(tmp_path: Path) -> None:
    done = _registry(f"postgresql://postgres@127.0.0.1:{free_port()}/none", tmp_path)
    assert done.returncode == 1
    assert "unreachable" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
def test_database_lost_every_request_is_503() -> None:
    """Its own server (the session's stays up), stopped under a running registry."""
    server_cm = postgres_server()
    server = server_cm.__enter__()
    running = True
    try:
        with registry_app(server.create_database()) as api:
            node = api.post("/nodes", json={"name": "n", "num_samples": 1}).json()
            beat, path = {"group_id": None, "num_samples": 1}, f"/nodes/{node['node_id']}/heartbeat"
            assert api.post(path, json=beat, headers=auth(node["token"])).status_code == 200
            running = False
            server_cm.__exit__(None, None, None)  # the server stops under the registry
            answers = [
                api.post(path, json=beat, headers=auth(node["token"])),
                api.post("/nodes", json={"name": "m", "num_samples": 1}),
                api.get("/groups"),
                api.get(f"/nodes/{node['node_id']}"),
                api.get("/health"),  # a load balancer takes this process out of rotation
            ]
    finally:
        if running:
            server_cm.__exit__(None, None, None)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert "registry database unavailable" in answer.json()["detail"]


def _waiting_on_a_lock(url: str) -> bool:
    rows = query(
        url,
        "SELECT COUNT(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )
    return bool(rows[0][0])


def test_a_create_that_loses_its_key_to_another_process_answers_as_the_retry(
    pg_server: PgServer,
) -> None:
    """Another registry process's create with the same Idempotency-Key, not yet committed
    (written here outside the write lock, so the unique index alone decides): this create
    waits on the index, fails on it when the other commits, runs again and answers with the
    other's node and token, as a retry; one row."""
    import psycopg

    url = pg_server.create_database()
    key = new_idempotency_key()
    token = derive_secret(key, "node-token", 43)
    try:
        with registry_app(url) as api, psycopg.connect(url) as other:
            row = other.execute(
                "INSERT INTO nodes (name, task, num_samples, token_hash, last_seen, created_at,"
                " idempotency_hash) VALUES ('n', 'digits', 1, %s, 0, 0, %s) RETURNING id",
                (hash_secret(token), hash_secret(key)),
            ).fetchone()
            assert row is not None
            with ThreadPoolExecutor(1) as pool:
                body, headers = {"name": "n", "num_samples": 1}, {IDEMPOTENCY_HEADER: key}
                answer = pool.submit(api.post, "/nodes", json=body, headers=headers)
                wait_for(lambda: _waiting_on_a_lock(url), timeout=30, what="create waiting")
                other.commit()
                r = answer.result(timeout=60)
        assert r.status_code == 201, r.text
        assert r.json() == {"node_id": row[0], "token": token}
        assert query(url, "SELECT COUNT(*) FROM nodes") == [(1,)]
    finally:
        pg_server.drop_database(url)
