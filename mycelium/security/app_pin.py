"""App pinning on a member: the node agent serves its SuperNode's ClientApp tasks itself and
runs only the ClientApp it has installed.

The SuperNode runs with ``--isolation process``: it starts no SuperExec and no
``flwr-clientapp`` processes, it only queues tasks on its loopback Runtime API. A
:class:`PinnedExecutor` in the agent claims each task (``AcquireTask``, as Flower's
SuperExec does), pulls the message, the context and the run's app bundle (FAB) the
SuperLink shipped, and compares the SHA-256 of that FAB's *content* with the hash of the
FAB built from the agent's own installed app (:func:`app_fab_hash`, Flower's deterministic
builder). A match runs the agent's already-imported ClientApp in this process; a mismatch
gets an ``INVALID_FAB`` error reply, a warning, and ``on_refused`` (the agent leaves the
group). The FAB's code is never installed, imported or executed: a tampered app cannot
run on the member whatever it contains. The pull/push helpers are flwr-clientapp's own
(``flwr.supernode.runtime.run_clientapp``); Flower's retry invoker and task heartbeat are not
used because they SIGINT the calling process on errors.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # flwr is imported where it is used: importing this module stays cheap
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.proto.task_pb2 import Task
    from flwr.supercore.runtime import RuntimeHttpClient

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.1  # s before the first AcquireTask poll after a task was served
MAX_POLL_INTERVAL = 1.0  # s between polls once idle (Flower's SuperExec polls every 1 s)
POLL_BACKOFF = 1.5  # each empty poll waits this much longer, up to MAX_POLL_INTERVAL
TASK_HEARTBEAT_INTERVAL = 15.0  # a claimed task's token lives 60 s past its last heartbeat
REQUEST_TIMEOUT = 30.0
CLIENT_APP_TASK = "flwr-clientapp"  # flwr.supercore.constant.TaskType.CLIENT_APP
ACQUIRE_TASK_METHOD = "/flwr.proto.Runtime/AcquireTask"


class PinError(RuntimeError):
    """The installed app cannot be pinned (unreadable app dir, no ClientApp)."""


def app_fab_hash(app_dir: Path) -> str:
    """SHA-256 (hex) of the FAB that ``flwr run app_dir`` builds and ships.

    Flower's builder is deterministic (fixed zip dates, sorted paths, a CONTENT manifest),
    so every host with byte-identical app files gets the same hash.
    """
    from flwr.cli.build import build_fab_from_disk

    try:
        return hashlib.sha256(build_fab_from_disk(Path(app_dir))).hexdigest()
    except (OSError, ValueError) as exc:
        raise PinError(f"cannot build the FAB of {app_dir}: {exc}") from None


def load_client_app(app_dir: Path) -> ClientApp:
    """Import the ClientApp named in ``app_dir/pyproject.toml`` from the installed files."""
    from flwr.clientapp import ClientApp

    app_dir = Path(app_dir).resolve()
    try:
        config = tomllib.loads((app_dir / "pyproject.toml").read_text())
        ref = config["tool"]["flwr"]["app"]["components"]["clientapp"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise PinError(f"{app_dir}/pyproject.toml names no clientapp: {exc}") from None
    module_name, _, attr = str(ref).partition(":")
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    app = getattr(importlib.import_module(module_name), attr or "app", None)
    if not isinstance(app, ClientApp):
        raise PinError(f"{ref} in {app_dir} is not a flwr ClientApp")
    return app


@dataclass(frozen=True)
class RefusedRun:
    """A run whose app bundle is not the member's installed app."""

    run_id: int
    fab_id: str
    fab_hash: str  # SHA-256 of the bundle's content as received
    expected_hash: str

    @property
    def reason(self) -> str:
        return (
            f"run {self.run_id} ships app {self.fab_id or '?'} with FAB "
            f"{self.fab_hash[:12]}, not the installed app {self.expected_hash[:12]}"
        )


def next_poll_wait(current: float, busy: bool, shortest: float, longest: float) -> float:
    """The wait before the next AcquireTask poll: ``shortest`` after a served task (the next
    message of a round follows soon), then ``POLL_BACKOFF`` times longer after each empty
    poll, up to ``longest``. An idle node polled its SuperNode every 0.1 s before: 2.0 CPU s
    a minute in the SuperNode and 1.2 in the agent (3.2 per node: at 32 nodes, 85% of one
    core); at 1 s, 0.3 + 0.1 (docs/flower.md)."""
    if busy:
        return shortest
    return min(longest, max(shortest, current * POLL_BACKOFF))


class PinnedExecutor:
    """Claims and serves the ClientApp tasks of one ``--isolation process`` SuperNode.

    ``runtime_address`` is the SuperNode's Runtime API (``127.0.0.1:PORT``, its ``--port``);
    ``superexec_secret`` is the content of its ``--superexec-auth-secret-file`` (optional:
    without it any local process may claim tasks). :meth:`start` runs a daemon thread;
    :meth:`serve_pending` serves what is queued now (tests, benchmarks).
    """

    def __init__(
        self,
        runtime_address: str,
        *,
        client_app: ClientApp,
        expected_fab_hash: str,
        on_refused: Callable[[RefusedRun], None] | None = None,
        superexec_secret: bytes | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        heartbeat_interval: float = TASK_HEARTBEAT_INTERVAL,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.runtime_address = runtime_address
        self.expected_fab_hash = expected_fab_hash
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self._client_app = client_app
        self._on_refused = on_refused
        self._secret = superexec_secret
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acquirer: RuntimeHttpClient | None = None
        self.served = 0
        self.refused: list[RefusedRun] = []

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> PinnedExecutor:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pinned-executor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._acquirer is not None:
            self._acquirer.close()
            self._acquirer = None

    def _loop(self) -> None:
        wait = self.poll_interval
        while not self._stop.is_set():
            try:
                busy = self.serve_pending() > 0
            except Exception as exc:  # noqa: BLE001 - the SuperNode may be restarting
                logger.debug("runtime API at %s not answering: %s", self.runtime_address, exc)
                busy = False
            wait = next_poll_wait(wait, busy, self.poll_interval, self.max_poll_interval)
            if not busy:
                self._stop.wait(wait)

    # -- tasks --------------------------------------------------------------------------
    def serve_pending(self) -> int:
        """Claim and serve queued ClientApp tasks until none is left; return how many."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest

        count = 0
        while not self._stop.is_set():
            res = self._acquire_client().AcquireTask(
                AcquireTaskRequest(supported_task_types=[CLIENT_APP_TASK])
            )
            if not (res.HasField("task") and res.token):
                return count
            self._serve(res.token, res.task)
            count += 1
        return count

    def _serve(self, token: str, task: Task) -> None:
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supernode.runtime.run_clientapp import pull_task_input

        client = self._task_client(token)
        beat = _TaskHeartbeat(client, self.heartbeat_interval)
        reply: Message | None = None
        context: Context | None = None
        refused: RefusedRun | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context, run, fab = pull_task_input(client)
            refused = self._check(task, run, fab.content)
            if refused is not None:
                reply = Message(Error(ErrorCode.INVALID_FAB, refused.reason), reply_to=message)
                details = refused.reason
                return
            try:
                reply = self._client_app(message=message, context=context)
                status, details = SubStatus.COMPLETED, ""
                self.served += 1
            except Exception as exc:  # noqa: BLE001 - the server gets an error reply
                logger.warning("ClientApp raised on run %s: %s", task.run_id, exc)
                details = f"{type(exc).__name__}: {exc}"[:1000]
                code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
                reply = Message(Error(code, details), reply_to=message)
        finally:
            try:
                self._finish(client, reply, context, status, details)
            finally:
                beat.stop()
                client.close()
                if refused is not None:  # after the error reply went out: the agent may
                    self._refuse(refused)  # now stop this SuperNode and leave the group

    def _check(self, task: Task, run: Any, content: bytes) -> RefusedRun | None:
        actual = hashlib.sha256(content).hexdigest()
        claimed = {task.fab_hash, run.fab_hash}
        if actual == self.expected_fab_hash and claimed <= {actual}:
            return None
        return RefusedRun(
            run_id=int(task.run_id),
            fab_id=str(run.fab_id),
            fab_hash=actual,
            expected_hash=self.expected_fab_hash,
        )

    def _refuse(self, refused: RefusedRun) -> None:
        self.refused.append(refused)
        logger.warning("refusing to train: %s", refused.reason)
        if self._on_refused is not None:
            try:
                self._on_refused(refused)
            except Exception:  # noqa: BLE001 - the reply must still go out
                logger.exception("on_refused callback failed")

    def _finish(
        self,
        client: RuntimeHttpClient,
        reply: Message | None,
        context: Context | None,
        status: str,
        details: str,
    ) -> None:
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        if reply is not None and context is not None:
            try:
                push_message(client, reply, context)
            except Exception as exc:  # noqa: BLE001 - the task still has to be finished
                logger.warning("could not push the reply of run %s: %s", context.run_id, exc)
        push_task_output(client=client, context=context, sub_status=status, details=details)

    # -- clients --------------------------------------------------------------------------
    def _acquire_client(self) -> RuntimeHttpClient:
        if self._acquirer is None:
            from flwr.supercore.interceptors import (
                RuntimeVersionHttpInterceptor,
                SuperExecAuthHttpInterceptor,
            )

            interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
            if self._secret:
                interceptors.append(
                    SuperExecAuthHttpInterceptor(
                        master_secret=self._secret, protected_methods={ACQUIRE_TASK_METHOD}
                    )
                )
            self._acquirer = self._client(interceptors)
        return self._acquirer

    def _task_client(self, token: str) -> RuntimeHttpClient:
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )

        return self._client(
            [
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(token),
            ]
        )

    def _client(self, interceptors: list[Any]) -> RuntimeHttpClient:
        from flwr.supercore.runtime import RuntimeHttpClient

        # Plain HTTP: the SuperNode's Runtime API listens on loopback only.
        return RuntimeHttpClient(
            f"http://{self.runtime_address}",
            interceptors=interceptors,
            verify=False,
            timeout=self.timeout,
        )


class _TaskHeartbeat:
    """Keeps a claimed task's token alive while the ClientApp runs (no SIGINT on failure,
    unlike Flower's own task heartbeat)."""

    def __init__(self, client: RuntimeHttpClient, interval: float) -> None:
        self._client = client
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

        while not self._stop.wait(self._interval):
            try:
                self._client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            except Exception as exc:  # noqa: BLE001 - the task ends soon either way
                logger.debug("task heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
