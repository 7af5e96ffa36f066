"""Agents forked from the zygote are real processes of the CLI: their own session, log,
environment and exit code, stopped like any child (``ManagedProcess``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mycelium import launch
from mycelium.procs import ManagedProcess, child_env, free_port, is_alive, wait_for
from mycelium.zygote import Zygote

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    # A light preload: these tests are about the process, not about sharing torch.
    made = Zygote(preload=["mycelium.cli"]).start()
    try:
        yield made
    finally:
        made.close()


def test_a_forked_command_writes_its_log_and_exits_with_its_code(
    zygote: Zygote, tmp_path: Path
) -> None:
    ok = ManagedProcess(
        "help",
        launch.cli_command("node", help=True),
        log_path=tmp_path / "ok.log",
        spawner=zygote,
    ).start()
    bad = ManagedProcess(
        "bad",
        launch.cli_command("node", no_such_option=1),
        log_path=tmp_path / "bad.log",
        spawner=zygote,
    ).start()
    assert ok.pid != os.getpid() and bad.pid != ok.pid
    wait_for(lambda: not ok.is_running() and not bad.is_running(), timeout=60, what="exits")
    assert ok.returncode() == 0 and "Usage" in ok.read_log()
    assert bad.returncode() == 2 and "No such option" in bad.read_log()


def test_a_forked_registry_serves_in_its_own_session_and_stops(
    zygote: Zygote, tmp_path: Path
) -> None:
    port = free_port()
    # The database comes from the child's environment only (MYCELIUM_DB, no --db).
    env = child_env({"MYCELIUM_DB": str(tmp_path / "from-env.db")})
    args = launch.cli_command("registry", port=port, log_level="warning")
    proc = ManagedProcess(
        "registry", args, log_path=tmp_path / "r.log", env=env, cwd=tmp_path, spawner=zygote
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: launch.registry_is_healthy(url), timeout=60, what="forked registry")
        pid = proc.pid
        assert pid is not None and os.getpgid(pid) == pid  # a stop ends its whole group
        assert (tmp_path / "from-env.db").is_file()
        shown = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"registry" in shown and str(port).encode() in shown  # ps tells it apart
        assert Path(f"/proc/{pid}/cwd").resolve() == tmp_path.resolve()
    finally:
        code = proc.stop(timeout=15)
    assert code is not None and not proc.is_running()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_forked_agents_stop_when_their_caller_is_killed(tmp_path: Path) -> None:
    """The demo killed with SIGKILL: its fork server ends, and with it every agent."""
    port = free_port()
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mycelium import launch\n"
        "from mycelium.procs import ManagedProcess\n"
        "from mycelium.zygote import Zygote\n"
        "z = Zygote(preload=['mycelium.cli'])\n"
        f"args = launch.registry_command(port={port}, db=Path({str(tmp_path / 'r.db')!r}))\n"
        f"p = ManagedProcess('r', args, log_path=Path({str(tmp_path / 'r.log')!r}), spawner=z)\n"
        "print(p.start().pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = -1
    try:
        assert caller.stdout is not None
        pid = int(caller.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: launch.registry_is_healthy(url), timeout=60, what="forked registry")
        caller.kill()
        caller.wait(timeout=10)
        wait_for(lambda: not is_alive(pid), timeout=30, what="the forked child to stop")
    finally:
        if caller.poll() is None:
            caller.kill()
        if is_alive(pid):
            os.kill(pid, 9)
