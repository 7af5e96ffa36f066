"""Node agents forked from one process that already imported torch and the agent: a zygote.

A node agent's memory is its imports (torch alone leaves ~140 MB of anonymous memory
in every process that imports it; docs/flower.md, "Where a process's memory goes"). When
one machine runs many agents (the demo, ``bench scale``), :class:`Zygote` starts them as
forks of a single process that imported those modules once (Python's own
``multiprocessing`` fork server, with a preload list): the pages the children never write
stay shared, copy-on-write, and no child pays the import's CPU seconds again.

Each forked agent is otherwise the process ``mycelium_net.py node ...`` would be: the same
Typer command with the same argv, its own session (so :meth:`ManagedProcess.stop` ends its
SuperNode and group with it), its log file on stdout and stderr, its own environment and
working directory, and death with its parent (the fork server, which ends with the
caller). A node run by hand (``python mycelium_net.py node``) is not forked: one process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mycelium import procs

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, ForkServerProcess

logger = logging.getLogger(__name__)

# What a node agent imports before it trains: loaded once, in the fork server.
AGENT_PRELOAD = (
    "torch",
    "numpy",
    "httpx",
    "mycelium.cli",
    "mycelium.cli.node",
    "mycelium.node.agent",
    "mycelium.node.config",
    "mycelium.security.app_pin",
    "mycelium.learning.data",
    "mycelium.learning.model",
    "mycelium.learning.tasks",
    "flwr.app",
    "flwr.clientapp",
    "flwr.supernode.runtime.run_clientapp",
)


class ForkedChild:
    """The :class:`subprocess.Popen` face of a forked agent that :class:`ManagedProcess`
    uses (``pid``, ``poll``, ``wait``, ``kill``, ``returncode``)."""

    def __init__(self, process: ForkServerProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None  # started
        return pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return None if self._process.is_alive() else self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"forked agent {self.pid}", timeout or 0.0)
        return code

    def kill(self) -> None:
        self._process.kill()


class Zygote:
    """Starts node agents as forks of one process holding their imports (see module doc).

    The fork server starts at the first :meth:`spawn` with :data:`procs.LEAN_ENV` in its
    environment (glibc reads ``MALLOC_ARENA_MAX`` once, at start) and ends with the process
    that made it (it watches a pipe from it)."""

    def __init__(self, preload: Sequence[str] = AGENT_PRELOAD) -> None:
        self._ctx: ForkServerContext = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload))
        self._started = False

    def start(self) -> Zygote:
        """Start the fork server now (it imports in the background while the caller goes
        on, e.g. starts the registry); :meth:`spawn` otherwise starts it first."""
        self._ensure_server()
        return self

    def _ensure_server(self) -> None:
        if self._started:
            return
        from multiprocessing import forkserver

        saved = dict(os.environ)
        os.environ.update(procs.child_env())  # the server's environment, then ours again
        try:
            forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self._started = True

    def close(self) -> None:
        """End the fork server (idempotent). Agents it forked and that still run get
        SIGTERM (they die with their parent): stop them first."""
        if not self._started:
            return
        from multiprocessing import forkserver, resource_tracker

        # The stdlib's own stops (its tests use them): close the server's pipe and reap it;
        # the same for the resource tracker it started, which ignores SIGTERM.
        for module, name in ((forkserver, "_forkserver"), (resource_tracker, "_resource_tracker")):
            stop = getattr(getattr(module, name, None), "_stop", None)
            if stop is not None:
                stop()
        self._started = False

    def spawn(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> ForkedChild:
        """Fork an agent running the command line ``args`` (a ``launch.node_command`` argv:
        interpreter, then a script or ``-m MODULE``, then its arguments)."""
        self._ensure_server()
        process = self._ctx.Process(
            target=run_forked_cli,
            args=(list(args[1:]), str(log_path), dict(env), str(cwd) if cwd else None),
            daemon=False,
        )
        process.start()
        return ForkedChild(process)


def show_command_line(args: Sequence[str]) -> bool:
    """Make ``/proc/self/cmdline`` (what ``ps`` and the tests read) show ``args`` instead of
    the fork server's command line, in the space the kernel gave that line (no privilege
    needed: the process writes its own memory through ``/proc/self/mem``); cut to fit.
    False where the kernel refuses; the process runs the same either way."""
    try:
        fields = procs.stat_fields(os.getpid()) or []  # [0] is the state, stat's field 3
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48, 49
        line = b"\0".join(a.encode() for a in args)[: end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(line.ljust(end - start, b"\0"))
    except (OSError, ValueError, IndexError) as exc:
        logger.debug("cannot set the command line: %s", exc)
        return False
    return True


def _let_the_server_die() -> None:
    """Close this child's copy of the fork server's "alive" pipe (multiprocessing hands one
    to every child, so that it could fork more): otherwise the server outlives a caller
    killed with SIGKILL as long as any child runs, and the children, which die with the
    server (``die_with_parent``), would then never be told to stop."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and fd is not None:
        os.close(fd)
        server._forkserver_alive_fd = None


def run_forked_cli(argv: list[str], log_path: str, env: dict[str, str], cwd: str | None) -> None:
    """In the forked child: become a process of its own, then run what ``python <argv>``
    would (``SCRIPT ARGS...`` or ``-m MODULE ARGS...``) as ``__main__``."""
    os.setsid()  # its own session: a stop signals it and its Flower children together
    _let_the_server_die()
    show_command_line([sys.executable, *argv])  # ps shows the agent, not the fork server
    procs.die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")  # Typer exits with the command's code
