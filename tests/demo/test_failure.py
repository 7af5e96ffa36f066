"""A demo whose agent dies: it stops at once, names the agent, and leaks no secret."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from mycelium.client import RegistryClient
from mycelium.launch import ENTRYPOINT
from mycelium.procs import free_port, wait_for
from tests.demo.process_tree import start_demo

pytestmark = pytest.mark.slow

URLSAFE_RUN = re.compile(rb"[A-Za-z0-9_-]{16,}")


def issued_secret_hashes(db: Path) -> set[str]:
    """Every *_hash column of every table: the sha256 of each token and invite code the
    registry issued (it stores no secret in clear)."""
    hashes: set[str] = set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for column in (c for c in columns if c.endswith("_hash")):
                rows = conn.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
                hashes.update(r[0] for r in rows)
    return hashes


def leaked_secrets(data: bytes, hashes: set[str], lengths: set[int]) -> list[str]:
    """Every url-safe run of ``data``, and every substring of it of one of ``lengths``,
    whose sha256 is an issued secret's hash."""
    found = []
    for match in URLSAFE_RUN.finditer(data):
        run = match.group()
        if hashlib.sha256(run).hexdigest() in hashes:
            found.append(run.decode())
        for length in lengths:
            for start in range(len(run) - length + 1):
                window = run[start : start + length]
                if hashlib.sha256(window).hexdigest() in hashes:
                    found.append(window.decode())
    return found


def test_a_dying_agent_stops_the_demo_and_no_secret_reaches_a_file(tmp_path: Path) -> None:
    port, run_dir = free_port(), tmp_path / "run"
    tree = start_demo(
        tmp_path,
        ENTRYPOINT,
        *("--nodes", "3", "--clusters", "2", "--duration", "300"),
        *("--port", str(port), "--run-dir", str(run_dir)),
        output=tmp_path / "demo.out",
    )
    client = RegistryClient(f"http://127.0.0.1:{port}", timeout=2.0)

    def placed(name: str) -> bool:
        assert tree.proc.poll() is None, tree.text()
        return any(n.name == name and n.group_id for n in client.list_nodes())

    try:
        wait_for(lambda: placed("n2"), timeout=300, interval=0.5, what="n2 placed in a group")
        hashes = issued_secret_hashes(run_dir / "registry.db")
        victim = tree.agent_pid("n1")
        assert victim is not None, tree.text()
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        code = tree.wait(timeout=60)
        stopped_after = time.monotonic() - killed_at
    finally:
        client.close()
        if tree.proc.poll() is None:
            tree.proc.kill()

    output = tree.text()
    assert code == 1, output
    assert stopped_after < 15, (stopped_after, output)
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: n1 exited unexpectedly (killed by SIGKILL); "), output
    assert str(run_dir / "report.json") in last, output
    assert "Traceback" not in output
    assert tree.survivors() == []
    report = json.loads((run_dir / "report.json").read_text())
    assert report["failure"]["process"] == "n1", report["failure"]

    # Every token and invite the registry issued, from the database after the run too.
    hashes |= issued_secret_hashes(run_dir / "registry.db")
    assert len(hashes) >= 3 + 2, "expected a token per node and per group"
    files = [p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith("registry.db")]
    files.append(tmp_path / "demo.out")
    assert len(files) > 5, files
    lengths = {43, 16}  # secrets.token_urlsafe(32) and (12)
    leaks = {str(p): leaked_secrets(p.read_bytes(), hashes, lengths) for p in files}
    assert {p: s for p, s in leaks.items() if s} == {}
