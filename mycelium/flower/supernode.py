"""A node's ``flower-supernode`` child: one per node, restarted against another SuperLink to
migrate. Flower gives it a new random node id at every start; :meth:`SuperNode.wait_connected`
reads it from the log so the node agent can report it to the registry.

In a TLS group it also authenticates with the membership's key
(``--auth-supernode-private-key``) and, pinned, runs with ``--isolation process``: no
SuperExec and no ``flwr-clientapp`` processes; the agent's own executor (made by ``pin``
for the runtime address of each start) serves its tasks (docs/security.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mycelium.flower.procs import (
    flower_env,
    flower_executable,
    new_superexec_secret,
    wait_while_running,
)
from mycelium.flower.protocol import NODE_ID_PATTERN, SuperNodeConfig, format_config
from mycelium.net.tls import supernode_tls_args
from mycelium.procs import ManagedProcess, free_port

logger = logging.getLogger(__name__)

DEFAULT_MAX_WAIT_TIME = 60.0


class Executor(Protocol):
    """What serves a pinned SuperNode's tasks (``mycelium.security.app_pin``)."""

    def start(self) -> Executor: ...

    def stop(self, timeout: float = 10.0) -> None: ...


PinFactory = Callable[[str, bytes], Executor]
"""(runtime address, SuperExec auth secret) -> a started executor."""


class SuperNode:
    """A ``flower-supernode`` child process with its own runtime port and FLWR_HOME."""

    def __init__(
        self,
        *,
        superlink_address: str,
        node_config: SuperNodeConfig,
        work_dir: Path,
        name: str,
        max_wait_time: float = DEFAULT_MAX_WAIT_TIME,
        root_certificates: Path | None = None,
        auth_private_key: Path | None = None,
        pin: PinFactory | None = None,
    ) -> None:
        """``root_certificates``: the group's published certificate (PEM file): connect
        over TLS trusting exactly it; None = ``--insecure`` (a loopback SuperLink).
        ``auth_private_key``: the membership's key (a SuperLink with supernode auth).
        ``pin``: serve tasks with the agent's executor (``--isolation process``)."""
        self.superlink_address = superlink_address
        self.root_certificates = root_certificates
        self.auth_private_key = auth_private_key
        self.pin = pin
        self._executor: Executor | None = None
        self.node_config = node_config
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
        self._stop_executor()  # the one of a previous start whose child exited
        rendered = format_config(self.node_config.to_node_config())
        self.port = free_port()
        flwr_home = self.work_dir / f"{self.name}.flwr"
        args = [
            flower_executable("flower-supernode"),
            *supernode_tls_args(self.root_certificates),
            "--superlink",
            self.superlink_address,
            "--port",
            str(self.port),
            "--max-wait-time",
            str(self.max_wait_time),
        ]
        if rendered:
            args += ["--node-config", rendered]
        if self.auth_private_key is not None:
            args += ["--auth-supernode-private-key", str(self.auth_private_key)]
        secret = b""
        if self.pin is not None:
            secret, secret_file = new_superexec_secret(flwr_home)
            args += ["--isolation", "process", "--superexec-auth-secret-file", str(secret_file)]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._flower_node_id = None
        self._proc = ManagedProcess(
            f"supernode:{self.name}", args, log_path=self.log_path, env=flower_env(flwr_home)
        ).start()
        if self.pin is not None:
            try:
                self._executor = self.pin(f"127.0.0.1:{self.port}", secret)
            except BaseException:  # no executor, no SuperNode: nothing is left running
                self._proc.stop()
                raise
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
        try:
            code = self._proc.stop(timeout=timeout)
        finally:
            self._stop_executor()
        self._flower_node_id = None
        return code

    def _stop_executor(self) -> None:
        if self._executor is not None:
            self._executor.stop()
            self._executor = None

    def kill(self) -> None:
        """SIGKILL the SuperNode alone (failure tests: a crash, no unregistration)."""
        if self._proc is not None:
            self._proc.kill()
        self._stop_executor()
