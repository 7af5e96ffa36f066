"""Hosts one learning group: a ``flower-superlink``, the group's registry entry, the open-ended
``flwr run`` of our Flower app, and a heartbeat thread telling the registry the host lives.

On loopback (the default) the SuperLink runs ``--insecure`` as before. Bound elsewhere it
runs with TLS: the host makes its own key and self-signed certificate for its public host
and publishes the certificate with the group, so members trust exactly what the registry
vouches for (``mycelium.net``). The SuperLink then binds 127.0.0.1 with
``--enable-supernode-auth`` behind a :class:`mycelium.security.gate.GroupGate`: nginx on
the public address forwards only the Fleet API, and only the registry's members' keys are
registered (docs/security.md). The ServerApp reads the group token from a file on this
host (the run config, which every SuperNode can read, carries only its path).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mycelium import config
from mycelium.api import GroupCreated
from mycelium.client import (
    RegistryClient,
    RegistryEndpoints,
    RegistryError,
    RegistryUnavailable,
)
from mycelium.fingerprint import ModelSpec
from mycelium.flower import protocol
from mycelium.flower.errors import FlowerNotInstalled, FlowerTimeout, GroupHostError
from mycelium.flower.procs import (
    flower_env,
    flower_executable,
    new_superexec_secret,
    wait_while_running,
)
from mycelium.flower.protocol import CONNECTION, RunConfig, format_config
from mycelium.learning.strategy import StrategyConfig
from mycelium.net.addresses import AddressError, host_port
from mycelium.net.certs import TlsFiles, write_private
from mycelium.net.tls import (
    SUPERLINK_HOST,
    flwr_connection_toml,
    make_group_tls,
    plan_group_exposure,
    superlink_tls_args,
    supernode_tls_args,
)
from mycelium.procs import (
    DeadlineExceeded,
    ManagedProcess,
    free_port,
    port_is_open,
)
from mycelium.security.fleet_proxy import FleetProxyError
from mycelium.security.gate import GateConfig, GroupGate

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parents[2] / "flower_app"
SUPERLINK_READY_TIMEOUT = 30.0
FLWR_CLI_TIMEOUT = 120.0
ADMISSION_INTERVAL = 2.0  # s between member-list syncs (at most the heartbeat interval)
GROUP_TOKEN_FILE = "group.token"


class GroupHost:
    """One group's Flower side plus its registry registration; see the module docstring."""

    def __init__(
        self,
        registry: RegistryEndpoints | str,
        *,
        name: str,
        task: str = config.TASK,
        max_capacity: int = config.MAX_CAPACITY,
        join_policy: str = config.JOIN_POLICY,
        performance_threshold: float = config.PERFORMANCE_THRESHOLD,
        work_dir: Path,
        seed_model: bytes | None = None,
        model_spec: ModelSpec | None = None,
        init_seed: int = 0,
        run_config: RunConfig | None = None,
        heartbeat_interval: float = config.GROUP_HEARTBEAT_INTERVAL_S,
        creator_token: str | None = None,
        registry_timeout: float = config.REGISTRY_TIMEOUT_S,
        app_dir: Path = APP_DIR,
        host: str = config.GROUP_HOST,
        public_host: str | None = None,
        insecure: bool = False,
        registry_ca: Path | None = None,
    ) -> None:
        """``host``/``public_host``/``insecure``: where the SuperLink binds and what it
        advertises (:func:`mycelium.net.tls.plan_group_exposure`; GroupHostError if
        refused). ``registry``: the registry URLs (a string is parsed), for us and the
        ServerApp, tried in order. ``registry_ca``: CA file of the https registries, for us
        and the ServerApp.
        ``run_config``: the ServerApp's, with the group's strategy; :meth:`start` fills in
        the registry fields and the group id."""
        try:
            self.exposure = plan_group_exposure(
                host=host, public_host=public_host, insecure=insecure
            )
        except AddressError as exc:
            raise GroupHostError(str(exc)) from None
        self.registry_ca = Path(registry_ca).resolve() if registry_ca else None
        self.tls: TlsFiles | None = None
        self.registry = RegistryEndpoints.of(registry)
        self.name = name
        self.max_capacity = max_capacity
        self.join_policy = join_policy
        self.performance_threshold = performance_threshold
        # Absolute once, here: flwr runs with cwd=work_dir and FLWR_HOME inside it.
        self.work_dir = Path(work_dir).resolve()
        if seed_model is None or model_spec is None:  # the task's own model, seeded
            task, spec, seed_bytes = initial_model(task, init_seed)
            seed_model, model_spec = seed_model or seed_bytes, model_spec or spec
        self.task = task
        self.seed_model = seed_model
        self.model_spec = model_spec
        self.run_config = run_config or RunConfig()
        self.heartbeat_interval = heartbeat_interval
        self.app_dir = Path(app_dir).resolve()
        # The group is created with the founding node's token, or the operator's for a
        # host without a node (``group --operator-token-file``); the registry needs one.
        self._client = RegistryClient(
            self.registry, token=creator_token, timeout=registry_timeout, ca_file=self.registry_ca
        )
        self._flwr_home = self.work_dir / "superlink.flwr"
        self._superlink: ManagedProcess | None = None
        self._serverapp: ManagedProcess | None = None
        self._credentials: GroupCreated | None = None
        self._port: int | None = None  # the SuperLink's (behind the gate when TLS)
        self._public_port: int | None = None  # the Fleet proxy's (TLS)
        self.gate: GroupGate | None = None
        self._secret_dir: Path | None = None  # holds the token file for the ServerApp
        self.run_id: int | None = None
        self.superlink_ready_s: float | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._heartbeat: threading.Thread | None = None

    # -- public state -------------------------------------------------------------------
    @property
    def strategy(self) -> StrategyConfig:
        return self.run_config.strategy

    @property
    def credentials(self) -> GroupCreated | None:
        return self._credentials

    @property
    def group_id(self) -> int | None:
        return self._credentials.group_id if self._credentials else None

    @property
    def invite_code(self) -> str | None:
        return self._credentials.invite_code if self._credentials else None

    @property
    def fleet_address(self) -> str | None:
        """``PUBLIC_HOST:PORT``: what the registry publishes for members."""
        port = self._public_port or self._port
        return self.exposure.advertised(port) if port else None

    @property
    def local_address(self) -> str | None:
        """Where this host itself dials its SuperLink (the ``flwr`` CLI)."""
        local = SUPERLINK_HOST if self.gate else self.exposure.local_host
        return host_port(local, self._port) if self._port else None

    @property
    def superlink_pid(self) -> int | None:
        return self._superlink.pid if self._superlink else None

    def is_healthy(self) -> bool:
        """True while the SuperLink runs and the run's ServerApp has not ended."""
        running = bool(self._superlink and self._superlink.is_running() and self.run_id)
        gated = self.gate is None or self.gate.is_running()
        return running and gated and not self._serverapp_ended()

    def _serverapp_ended(self) -> bool:
        """True once the run's ServerApp process is gone (it ended: stopped, ``num-rounds``
        reached, the group failed/dissolved, or it never got its task)."""
        return self._serverapp is not None and not self._serverapp.is_running()

    def run_log(self, timeout: float = 30.0) -> str:
        """The ServerApp's log so far (``flwr log RUN --show``); one line per round."""
        if self.run_id is None:
            return ""
        return self._flwr("log", str(self.run_id), CONNECTION, "--show", timeout=timeout)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> GroupCreated:
        """Start the SuperLink, register the group, start the run and the heartbeats.

        Raises :class:`mycelium.client.RegistryError` (e.g. ``RegistryUnavailable``) or a
        :class:`mycelium.flower.errors.FlowerError`; whatever was started is stopped again
        before raising.
        """
        try:
            if not (self.app_dir / "pyproject.toml").is_file():
                raise FlowerNotInstalled(
                    f"Flower app folder {self.app_dir} not found: install the project from "
                    "its checkout (pip install -e .)"
                )
            if not self._client.health():  # a RegistryError: the caller may retry later
                raise RegistryUnavailable(f"registry at {self.registry} is unreachable")
            self._start_superlink()
            if self.gate is not None:
                self._start_gate(self.gate)
            self._register()
            if self.gate is not None:
                assert self._credentials is not None
                self.gate.start_admission(self._client, self._credentials.group_id)
            self._write_connection()
            self.run_id = self._start_run()
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, name=f"group-{self.group_id}-heartbeat", daemon=True
            )
            self._heartbeat.start()
        except BaseException:
            self.stop()
            raise
        assert self._credentials is not None
        logger.info(
            "group %s (%s) hosted at %s, run %s",
            self.group_id,
            self.name,
            self.fleet_address,
            self.run_id,
        )
        return self._credentials

    def stop(self, *, close_in_registry: bool = True) -> None:
        """Stop the heartbeats, close the group in the registry (its members re-home at once;
        skipped when the caller knows the registry is unreachable: the group then fails
        after its TTL), stop the SuperLink with its run; nothing is left running.
        Idempotent; a registry that refuses is one warning, never an exception."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        try:
            if self._heartbeat is not None:  # no heartbeat may follow the close
                self._heartbeat.join(timeout=self._client.timeout + 1)
            if close_in_registry:
                self._close_in_registry()
        finally:  # stopping the SuperLink ends the run (the model is saved every round)
            try:
                if self.gate is not None:  # unregister every member while the link runs
                    self.gate.stop()
            finally:
                try:
                    if self._serverapp is not None:  # its last output reaches the link
                        self._serverapp.stop()
                    if self._superlink is not None:
                        self._superlink.stop()
                finally:
                    self._client.close()
                    if self._secret_dir is not None:
                        shutil.rmtree(self._secret_dir, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------------
    def _start_superlink(self) -> None:
        self.tls = make_group_tls(self.work_dir / "tls", self.exposure)
        bind = SUPERLINK_HOST if self.tls else self.exposure.bind_host
        self._port = free_port(bind)
        _, secret_file = new_superexec_secret(self._flwr_home)  # our launcher's alone
        args = [
            flower_executable("flower-superlink"),
            *superlink_tls_args(self.tls),
            "--host",
            bind,
            "--port",
            str(self._port),
            "--disable-runtime-dependency-installation",
            # No flower-superexec: our launcher claims the run's task (serverapp_exec).
            "--isolation",
            "process",
            "--superexec-auth-secret-file",
            str(secret_file),
        ]
        if self.tls is not None:
            args.append("--enable-supernode-auth")
            self._public_port = free_port(self.exposure.bind_host)
            self.gate = GroupGate(
                GateConfig(
                    tls=self.tls,
                    listen_host=self.exposure.bind_host,
                    listen_port=self._public_port,
                    superlink_port=self._port,
                    work_dir=self.work_dir,
                    interval=min(ADMISSION_INTERVAL, self.heartbeat_interval),
                )
            )
        self._superlink = ManagedProcess(
            f"superlink:{self.name}",
            args,
            log_path=self.work_dir / "superlink.log",
            env=flower_env(self._flwr_home),
            cwd=self.work_dir,
        ).start()
        port, local = self._port, SUPERLINK_HOST if self.tls else self.exposure.local_host
        started = time.monotonic()
        try:
            wait_while_running(
                self._superlink,
                lambda: port_is_open(port, local),
                timeout=SUPERLINK_READY_TIMEOUT,
                what=f"flower-superlink on port {port}",
            )
        except DeadlineExceeded as exc:  # ChildExited (it died) propagates as it is
            raise FlowerTimeout(str(exc)) from None
        self.superlink_ready_s = time.monotonic() - started
        self._start_serverapp(secret_file)

    def _start_serverapp(self, secret_file: Path) -> None:
        """The process that claims the run's ServerApp task and becomes ``flwr-serverapp``
        (``mycelium.flower.serverapp_exec``): one process where Flower's SuperExec made two."""
        assert self._superlink is not None and self._superlink.pid is not None
        args = [
            sys.executable,
            "-m",
            "mycelium.flower.serverapp_exec",
            "--runtime-api-address",
            str(self.local_address),
            *supernode_tls_args(self.tls.ca_certfile if self.tls else None),
            "--secret-file",
            str(secret_file),
            "--parent-pid",
            str(self._superlink.pid),
        ]
        self._serverapp = ManagedProcess(
            f"serverapp:{self.name}",
            args,
            log_path=self.work_dir / "serverapp.log",
            env=flower_env(self._flwr_home),
            cwd=self.work_dir,
        ).start()

    def _start_gate(self, gate: GroupGate) -> None:
        try:
            gate.start_proxy()
        except FleetProxyError as exc:  # nginx missing or refusing: one line, no retry
            raise GroupHostError(str(exc)) from None

    def _register(self) -> None:
        assert self.fleet_address is not None
        self._credentials = self._client.create_group(
            name=self.name,
            fleet_address=self.fleet_address,
            task=self.task,
            max_capacity=self.max_capacity,
            join_policy=self.join_policy,
            performance_threshold=self.performance_threshold,
            certificate=self.tls.certfile.read_text() if self.tls else None,
            model_spec=None if self.model_spec is None else self.model_spec.to_json(),
            fingerprint=None if self.model_spec is None else self.model_spec.fingerprint,
            strategy=self.strategy.name,
            strategy_params=self.strategy.params,
        )
        self._client.token = self._credentials.group_token
        if self.seed_model is not None:
            self._client.put_model(self._credentials.group_id, self.seed_model)

    def _write_connection(self) -> None:
        assert self.local_address is not None
        root = self.tls.certfile if self.tls else None
        toml = flwr_connection_toml(CONNECTION, self.local_address, root)
        (self._flwr_home / "config.toml").write_text(toml)

    def _start_run(self) -> int:
        assert self._credentials is not None
        config = dataclasses.replace(
            self.run_config,
            registry_url=str(self.registry),
            registry_ca=str(self.registry_ca or ""),
            group_id=self._credentials.group_id,
            # Every SuperNode can read the run config (Fleet get-run): only a path goes.
            group_token_file=str(self._write_token_file()),
        )
        out = self._flwr(
            "run",
            str(self.app_dir),
            CONNECTION,
            "--run-config",
            format_config(config.to_run_config()),
            "--format",
            "json",
        )
        try:
            return int(json.loads(out)[protocol.RUN_ID_KEY])
        except (ValueError, KeyError, TypeError):
            tail = self._redact(out.strip())[:300]
            raise GroupHostError(f"flwr run gave no run id: {tail}") from None

    def _write_token_file(self) -> Path:
        """The group token in a 0600 file, for the ServerApp: in a private temporary folder
        (0700) removed at :meth:`stop`, never in the work dir with the logs."""
        assert self._credentials is not None
        self._secret_dir = Path(tempfile.mkdtemp(prefix="mycelium-group-"))
        write_private(self._secret_dir / GROUP_TOKEN_FILE, self._credentials.group_token.encode())
        return self._secret_dir / GROUP_TOKEN_FILE

    def _flwr(self, *args: str, timeout: float = FLWR_CLI_TIMEOUT) -> str:
        try:
            proc = subprocess.run(
                [flower_executable("flwr"), *args],
                env=flower_env(self._flwr_home),
                cwd=self.work_dir,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise FlowerTimeout(f"flwr {args[0]} did not finish in {timeout:.0f}s") from None
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            detail = self._redact(" | ".join(tail))[:300]
            raise GroupHostError(f"flwr {args[0]} failed: {detail}")
        return proc.stdout

    def _redact(self, text: str) -> str:
        """``text`` without the group's secrets (Flower may echo the run config)."""
        creds = self._credentials
        for secret in (creds.group_token, creds.invite_code) if creds else ():
            if secret:
                text = text.replace(secret, "***")
        return text

    def _close_in_registry(self) -> None:
        if self._credentials is None:
            return
        try:
            self._client.close_group(self._credentials.group_id)
        except RegistryError as exc:
            logger.warning(
                "group %s: could not close it in the registry: %s", self._credentials.group_id, exc
            )

    def _heartbeat_loop(self) -> None:
        assert self._credentials is not None
        gid = self._credentials.group_id
        while not self._stop.wait(self.heartbeat_interval):
            if not self.is_healthy():
                logger.warning("group %s: superlink or serverapp ended; heartbeats stop", gid)
                return
            try:
                self._client.group_heartbeat(gid)
            except RegistryError as exc:
                logger.warning("group %s heartbeat failed: %s", gid, exc)


def initial_model(reference: str, seed: int) -> tuple[str, ModelSpec, bytes]:
    """(task name, model spec, seeded initial model as npz bytes) of a task reference: what
    the registry lists and the ServerApp starts from (torch here, never in the ServerApp).
    TaskLoadError (a ValueError) if the reference leads to no task."""
    from mycelium.learning.codec import weights_to_bytes
    from mycelium.learning.tasks.base import get_weights, spec_of
    from mycelium.learning.tasks.loader import load_task

    task = load_task(reference)
    model = task.create_model(seed)
    return task.name, spec_of(model), weights_to_bytes(get_weights(model))


def host_until_signalled(host: GroupHost, *, check_interval: float = 1.0) -> int:
    """Start ``host`` and keep it in the foreground (the ``group`` command) until
    SIGINT/SIGTERM (returns 0) or until its SuperLink or ServerApp ends (returns 1).
    Always stops it. Start-up errors propagate."""
    stop = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in handled}
    try:
        host.start()
        while not stop.wait(check_interval):
            if not host.is_healthy():
                logger.error(
                    "group %s: its superlink or serverapp ended (stopped, or the registry "
                    "failed/dissolved the group); see %s",
                    host.group_id,
                    host.work_dir,
                )
                return 1
        logger.info("group %s: stopping on signal", host.group_id)
        return 0
    finally:
        try:
            host.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
