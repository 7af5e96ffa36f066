"""The dashboard's URL is printed where users start things: the registry and the demo."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

from mycelium.demo.config import DemoConfig
from mycelium.demo.live import LiveView
from mycelium.demo.observation import DemoRun
from mycelium.procs import ManagedProcess, free_port, wait_for
from tests.conftest import ENTRYPOINT, ROOT


def test_registry_prints_the_dashboard_url_at_start(tmp_path: Path) -> None:
    port = free_port()
    args = [sys.executable, str(ENTRYPOINT), "registry", "--port", str(port)]
    proc = ManagedProcess(
        "registry", [*args, "--db", str(tmp_path / "r.db")], log_path=tmp_path / "r.log", cwd=ROOT
    )
    try:
        proc.start()
        line = f"dashboard at http://127.0.0.1:{port}/dashboard"
        wait_for(lambda: line in proc.read_log(), timeout=30, what="the dashboard URL in the log")
    finally:
        proc.stop()


def test_demo_prints_the_dashboard_url_at_start(tmp_path: Path) -> None:
    out = io.StringIO()
    run = DemoRun(config=DemoConfig(), run_dir=tmp_path, registry_url="http://127.0.0.1:8123")
    LiveView(Console(file=out, force_terminal=False, width=120)).started(run)
    assert "live dashboard: http://127.0.0.1:8123/dashboard" in out.getvalue()
