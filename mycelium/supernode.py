"""A node's ``flower-supernode`` child: one per node, restarted against another SuperLink to
migrate. Flower gives it a new random node id at every start; :meth:`SuperNode.wait_connected`
reads it from the log so the node agent can report it to the registry."""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from mycelium.procs import ManagedProcess, flower_env, free_port, wait_for

logger = logging.getLogger(__name__)

NODE_ID_PATTERN = re.compile(r"SuperNode ID: (\d+)")
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
DEFAULT_MAX_WAIT_TIME = 60.0

ConfigValue = str | int | float | bool
T = TypeVar("T")


def format_node_config(config: Mapping[str, ConfigValue]) -> str:
    """Render ``config`` for ``--node-config`` (or ``flwr run --run-config``) so that Flower
    parses back the same typed values.

    Flower splits on ``key=value`` with values ``'...'``, ``"..."`` or bare tokens and
    reads them as TOML: strings go in single quotes (TOML literal strings, no escapes), or
    double quotes if they contain a single quote. ValueError for what cannot round-trip.
    """
    parts = []
    for key, value in config.items():
        if not _KEY_PATTERN.match(key):
            raise ValueError(f"node-config key {key!r} must match [A-Za-z0-9_-]+")
        parts.append(f"{key}={_format_value(key, value)}")
    return " ".join(parts)


def _format_value(key: str, value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"node-config {key}: {value} is not finite")
        return repr(value)
    if isinstance(value, str):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"node-config {key}: control characters are not allowed")
        if "'" not in value:
            return f"'{value}'"
        if '"' not in value and "\\" not in value:
            return f'"{value}"'
        raise ValueError(f"node-config {key}: cannot quote a value with both quote kinds")
    raise ValueError(f"node-config {key}: unsupported type {type(value).__name__}")


class SuperNode:
    """A ``flower-supernode`` child process with its own runtime port and FLWR_HOME."""

    def __init__(
        self,
        *,
        superlink_address: str,
        node_config: Mapping[str, ConfigValue],
        work_dir: Path,
        name: str,
        max_wait_time: float = DEFAULT_MAX_WAIT_TIME,
    ) -> None:
        self.superlink_address = superlink_address
        self.node_config = dict(node_config)
        self.work_dir = Path(work_dir)
        self.name = name
        self.max_wait_time = max_wait_time
        self.port: int | None = None
        self._proc: ManagedProcess | None = None
        self._log_offset = 0
        self._flower_node_id: int | None = None

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.name}.supernode.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def flower_node_id(self) -> int | None:
        return self._flower_node_id

    def start(self) -> SuperNode:
        """Start the child (idempotent while it runs)."""
        if self.is_running():
            return self
        rendered = format_node_config(self.node_config)
        self.port = free_port()
        flwr_home = self.work_dir / f"{self.name}.flwr"
        args = [
            flower_executable("flower-supernode"),
            "--insecure",
            "--superlink",
            self.superlink_address,
            "--port",
            str(self.port),
            "--max-wait-time",
            str(self.max_wait_time),
        ]
        if rendered:
            args += ["--node-config", rendered]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._flower_node_id = None
        self._proc = ManagedProcess(
            f"supernode:{self.name}", args, log_path=self.log_path, env=flower_env(flwr_home)
        ).start()
        logger.debug("supernode %s -> %s (pid %s)", self.name, self.superlink_address, self.pid)
        return self

    def _read_node_id(self) -> int | None:
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            match = NODE_ID_PATTERN.search(f.read().decode(errors="replace"))
        return int(match.group(1)) if match else None

    def wait_connected(self, timeout: float = 30.0) -> int:
        """Poll the log until the SuperLink gave this SuperNode its id; return it.

        Raises :class:`mycelium.procs.DeadlineExceeded`, or :class:`ChildExited` at once if
        the SuperNode exits.
        """
        if self._proc is None:
            raise RuntimeError("SuperNode is not started")
        self._flower_node_id = wait_while_running(
            self._proc,
            self._read_node_id,
            timeout=timeout,
            what=f"supernode {self.name} connected to {self.superlink_address}",
        )
        return self._flower_node_id

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (Flower unregisters the node), then SIGKILL after ``timeout``."""
        if self._proc is None:
            return None
        code = self._proc.stop(timeout=timeout)
        self._flower_node_id = None
        return code

    def kill(self) -> None:
        """SIGKILL the SuperNode alone (failure tests: a crash, no unregistration)."""
        if self._proc is not None:
            self._proc.kill()


class ChildExited(RuntimeError):
    """A Flower child process exited while we waited for it to become ready."""


class _Exited(BaseException):
    """Escapes :func:`wait_for`'s retry (it retries ``Exception``)."""


def wait_while_running(
    proc: ManagedProcess, condition: Callable[[], T | None], *, timeout: float, what: str
) -> T:
    """:func:`wait_for` ``condition``, failing at once with :class:`ChildExited` if ``proc``
    exits meanwhile."""

    def check() -> T | None:
        if not proc.is_running():
            raise _Exited(f"{proc.name} exited with code {proc.returncode()}")
        return condition()

    try:
        return wait_for(check, timeout=timeout, interval=0.1, what=what)
    except _Exited as exc:
        raise ChildExited(f"{exc}; see {proc.log_path}") from None


def flower_executable(name: str) -> str:
    """Absolute path of a Flower console script; FileNotFoundError if missing."""
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH (is flwr installed?)")
    return path
