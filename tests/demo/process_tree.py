"""A demo run as a user starts it (a child process), and every process it ever had."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from mycelium.procs import descendant_pids


class Tree:
    """Every descendant a process has had while we watched it."""

    def __init__(self, proc: subprocess.Popen[bytes], output: Path) -> None:
        self.proc = proc
        self.output = output
        self.seen: set[int] = set()

    def watch(self) -> None:
        self.seen.update(descendant_pids(self.proc.pid))

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.watch()
            time.sleep(0.5)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError(f"demo still running after {timeout}s:\n{self.text()}")
        return self.proc.returncode

    def survivors(self) -> list[str]:
        """``"pid command line"`` of every process seen that is still alive."""
        alive = []
        for pid in self.seen:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(f"{pid} {cmdline(pid)}")
        return alive

    def agent_pid(self, name: str) -> int | None:
        """The pid of the node agent started with ``--name NAME`` (not its children)."""
        self.watch()
        for pid in sorted(self.seen):
            args = cmdline(pid).split()
            if "node" in args and "--name" in args and args[args.index("--name") + 1] == name:
                return pid
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_demo(cwd: Path, script: Path, *args: str, output: Path) -> Tree:
    """``python SCRIPT demo ARGS`` in ``cwd``; stdout and stderr go to ``output``."""
    log = open(output, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, str(script), "demo", *args],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # As from a terminal: a pytest started in the background (`cmd &` in a script)
        # ignores SIGINT, and an ignored SIGINT is inherited, so Ctrl-C would never arrive.
        preexec_fn=_default_sigint,
    )
    log.close()
    return Tree(proc, output)
