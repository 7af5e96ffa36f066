"""The memory and CPU readers the benches use, on real processes, and the environment
every child we start gets."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mycelium.procs import child_env, cpu_seconds, pss_kb, rss_kb, tree_pss_mb

HOLD_MB = 64
CHILD = (
    "import sys, time\n"
    f"block = bytearray({HOLD_MB} * 1024 * 1024)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "end = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass\n"
    "time.sleep(60)\n"
)


def test_pss_and_cpu_of_a_real_process_that_holds_memory() -> None:
    with subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            deadline = time.monotonic() + 10
            while cpu_seconds(child.pid) < 0.3 and time.monotonic() < deadline:
                time.sleep(0.05)
            pss = pss_kb(child.pid)
            # Its private 64 MiB count whole; shared libraries only in part, so PSS < RSS.
            assert HOLD_MB * 1024 <= pss < rss_kb(child.pid)
            assert tree_pss_mb(os.getpid()) >= HOLD_MB  # our tree includes the child
            assert 0.3 <= cpu_seconds(child.pid) < 30
        finally:
            child.kill()
    assert pss_kb(child.pid) == 0 and cpu_seconds(child.pid) == 0.0  # gone


def test_children_get_the_lean_environment_unless_set_or_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = child_env({"EXTRA": "1"})
    assert env["MALLOC_ARENA_MAX"] == "2" and env["EXTRA"] == "1"
    assert env["OMP_NUM_THREADS"] == "3"  # a value already set wins
    monkeypatch.setenv("MYCELIUM_LEAN_ENV", "0")
    assert "MALLOC_ARENA_MAX" not in child_env()
