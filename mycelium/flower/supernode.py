"""A node's ``flower-supernode`` child: one per node, restarted against another SuperLink to
migrate. Flower gives it a new random node id at every start; :meth:`SuperNode.wait_connected`
reads it from the log so the node agent can report it to the registry."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from mycelium.flower.procs import flower_env, flower_executable, wait_while_running
from mycelium.flower.protocol import NODE_ID_PATTERN, ConfigValue, format_config
from mycelium.procs import ManagedProcess, free_port

logger = logging.getLogger(__name__)

DEFAULT_MAX_WAIT_TIME = 60.0


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
        self.work_dir = Path(work_dir).resolve()  # children never depend on our cwd
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
        """Flower's id for this SuperNode once it connected; read from its log, so an id
        that appears after :meth:`wait_connected` gave up is still found."""
        if self._flower_node_id is None and self.is_running():
            self._flower_node_id = self._read_node_id()
        return self._flower_node_id

    def start(self) -> SuperNode:
        """Start the child (idempotent while it runs)."""
        if self.is_running():
            return self
        rendered = format_config(self.node_config)
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

        Raises :class:`mycelium.procs.DeadlineExceeded`, or
        :class:`mycelium.flower.errors.ChildExited` at once if the SuperNode exits.
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
