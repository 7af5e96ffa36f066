"""Child processes, ports and deadlines shared by the registry, nodes, groups, demo and tests.

Every child is started on a known port and stopped with :meth:`ManagedProcess.stop`
(SIGTERM, wait with a deadline, then SIGKILL). Readiness is polled with a deadline,
never waited for with a fixed sleep.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


class DeadlineExceeded(TimeoutError):
    """A condition polled by :func:`wait_for` did not hold before its deadline."""


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    except OSError:
        return None


_LIBC = _load_libc()  # loaded up front: the child must not import between fork and exec


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux prctl), so a
    crashed agent (kill -9) does not leave its SuperLink or SuperNode behind."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux prctl), so that what a crashed
    child leaves behind stays findable with :func:`descendant_pids` and can be stopped."""
    return _LIBC is not None and _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1) == 0


def reap(pids: Sequence[int]) -> None:
    """Collect the exit status of adopted descendants that ended (no zombies left)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bind_socket(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to ``host:port`` with the options uvicorn's own bind uses
    (``SO_REUSEADDR``): connections that a killed server left in TIME_WAIT do not block a
    restart on its port, a live listener still does (``OSError``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could bind ``port`` on ``host`` now (see :func:`bind_socket`)."""
    try:
        bind_socket(port, host).close()
    except OSError:
        return False
    return True


def port_is_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    clock: Clock = time.monotonic,
) -> T:
    """Poll ``condition`` until it returns a truthy value, or raise :class:`DeadlineExceeded`.

    Exceptions raised by ``condition`` count as "not yet" until the deadline.
    """
    deadline = clock() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - polled conditions fail until ready
            last_error = exc
            value = None
        if value:
            return value
        if clock() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise DeadlineExceeded(f"{what} not met within {timeout:.1f}s{detail}")
        time.sleep(interval)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces): [0] is
    the state letter, [1] the parent pid, [11]/[12] utime/stime, [19] the start time; None
    when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cmdline(pid: int) -> str | None:
    """The command line of ``pid``, arguments joined by spaces; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _parent_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])


def descendant_pids(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        parent = _parent_of(int(entry.name))
        if parent is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kb(pid: int) -> int:
    """Resident memory of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants, in MiB."""
    return sum(rss_kb(p) for p in [pid, *descendant_pids(pid)]) / 1024


def pss_kb(pid: int) -> int:
    """Proportional set size of one process in KiB (``Pss`` of /proc/PID/smaps_rollup: each
    shared page counted as its share among the processes mapping it, so a sum over
    processes is the memory they really take); 0 when it is gone or not readable."""
    return pss_split_kb(pid)[0]


def pss_split_kb(pid: int) -> tuple[int, int]:
    """(PSS, its anonymous part) of one process in KiB: anonymous = heap, arenas, thread
    stacks, arrays; the rest is files mapped (code of the imported libraries, mostly).
    (0, 0) when it is gone or not readable."""
    found: dict[bytes, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                key = line.split(b":", 1)[0]
                if key in (b"Pss", b"Pss_Anon"):
                    found[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return found.get(b"Pss", 0), found.get(b"Pss_Anon", 0)


def tree_pss_mb(pid: int) -> float:
    """PSS of ``pid`` and all its descendants, in MiB."""
    return sum(pss_kb(p) for p in [pid, *descendant_pids(pid)]) / 1024


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


# Every process we start trains or scores tiny batches on one thread: glibc's default of up
# to 8 malloc arenas per core and OpenMP pools sized to the cores only cost memory there
# (docs/flower.md, "Where a node's memory goes"). A value already in the environment wins;
# MYCELIUM_LEAN_ENV=0 leaves the environment as it is (to measure the difference).
LEAN_ENV = {"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child we start: ours, plus :data:`LEAN_ENV` where unset."""
    env = dict(os.environ)
    if env.get("MYCELIUM_LEAN_ENV", "1") != "0":
        for key, value in LEAN_ENV.items():
            env.setdefault(key, value)
    if extra:
        env.update(extra)
    return env


def is_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (any process, not only our children)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def terminate_pids(pids: Sequence[int], *, timeout: float) -> None:
    """SIGTERM the still-living ``pids``, wait up to ``timeout``, then SIGKILL the rest."""
    living = [p for p in pids if is_alive(p)]
    for pid in living:
        _send(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while living and time.monotonic() < deadline:
        time.sleep(0.1)
        living = [p for p in living if is_alive(p)]
    for pid in living:
        logger.warning("pid %s ignored SIGTERM; killing it", pid)
        _send(pid, signal.SIGKILL)


def _send(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Child(Protocol):
    """What :class:`ManagedProcess` needs of a started child (:class:`subprocess.Popen`,
    or a forked agent: :class:`mycelium.zygote.ForkedChild`)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class Spawner(Protocol):
    """Starts a child another way than fork + exec (:class:`mycelium.zygote.Zygote`); the
    child must start a session of its own and write ``log_path``."""

    def spawn(
        self, args: Sequence[str], *, log_path: Path, env: Mapping[str, str], cwd: Path | None
    ) -> Child: ...


class ManagedProcess:
    """A child process with a name, a log file and a stop that always finishes.

    The child runs in its own session (process group), so :meth:`stop` also ends the
    grandchildren it started (a SuperLink's superexec, a SuperNode's ClientApps). A
    ``spawner`` starts it instead of :class:`subprocess.Popen` (a forked node agent).
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._env = dict(env) if env is not None else child_env()
        self._cwd = cwd
        self._spawner = spawner
        self._popen: Child | None = None
        self._log: IO[bytes] | None = None
        self._descendants: set[int] = set()

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._spawner is not None:
            self._popen = self._spawner.spawn(
                self.args, log_path=self.log_path, env=self._env, cwd=self._cwd
            )
            logger.debug("forked %s pid=%s", self.name, self._popen.pid)
            return self
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._popen = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            preexec_fn=die_with_parent if _LIBC is not None else None,
        )
        # Not the arguments: a command line may carry an invite code.
        logger.debug("started %s pid=%s: %s", self.name, self._popen.pid, self.args[0])
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the child's process group, wait up to ``timeout``, then SIGKILL it.

        Descendants that moved to a session of their own (Flower's superexec does, and
        its ServerApp/ClientApp processes with it) are found through /proc before the
        signal and get the same treatment, so nothing outlives the stop.
        """
        if self._popen is None:
            return None
        try:
            self._remember_descendants()
            if self._popen.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self._popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                    self._remember_descendants()  # also those it started while stopping
            # Grandchildren may outlive a child that exited on SIGTERM: end the group.
            self._signal_group(signal.SIGKILL)
            self._popen.wait(timeout=5)
            terminate_pids(sorted(self._descendants), timeout=timeout)
            # All ended: a later start (a restart) must not signal these pids, maybe reused.
            self._descendants.clear()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return self._popen.returncode

    def terminate(self) -> None:
        """Send SIGTERM to the child's process group without waiting (see :meth:`stop`)."""
        if self._popen is not None and self._popen.poll() is None:
            self._remember_descendants()
            self._signal_group(signal.SIGTERM)

    def _remember_descendants(self) -> None:
        """Record the child's descendants now: once it exits they are re-parented away."""
        if self._popen is not None and self._popen.poll() is None:
            self._descendants.update(descendant_pids(self._popen.pid))

    def kill(self) -> None:
        """SIGKILL the child alone (used by failure tests to simulate a crash)."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait(timeout=5)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._popen is not None
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:  # a forked child not yet in its own session: itself
            _send(self._popen.pid, sig)
        except PermissionError:
            pass
