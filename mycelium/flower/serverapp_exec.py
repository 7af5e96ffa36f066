"""The group's ServerApp in one process instead of two.

The group's SuperLink runs with ``--isolation process``: it starts no ``flower-superexec``,
whose only work in a group was to claim the one run's ServerApp task and start a
``flwr-serverapp`` for it (two processes of Flower's whole import stack, ~93 + ~98 MB PSS).
This process claims that task itself (``AcquireTask`` on the SuperLink's Runtime API, signed
with the SuperExec secret only the group host holds, as Flower's SuperExec does) and then
*becomes* Flower's own ``flwr-serverapp`` (``execv``: same PID, Flower's code from there on),
the task token handed over in an anonymous in-memory file, never on a command line or disk.

Run by :class:`mycelium.flower.group_host.GroupHost`::

    python -m mycelium.flower.serverapp_exec --runtime-api-address 127.0.0.1:PORT \
        (--insecure | --root-certificates CA.pem) --secret-file FILE --parent-pid SUPERLINK_PID

It polls until the run's task is there and exits (1) if the SuperLink (``--parent-pid``)
is gone first; ``flwr-serverapp`` then watches the same PID, as under Flower's SuperExec.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mycelium.flower.procs import flower_executable
from mycelium.net.tls import supernode_tls_args
from mycelium.procs import is_alive

if TYPE_CHECKING:
    from flwr.supercore.runtime import RuntimeHttpClient

logger = logging.getLogger(__name__)

SERVER_APP_TASK = "flwr-serverapp"  # flwr.supercore.constant.TaskType.SERVER_APP
ACQUIRE_TASK_METHOD = "/flwr.proto.Runtime/AcquireTask"
POLL_INTERVAL = 0.2  # s between AcquireTask polls until the run's task is queued
REQUEST_TIMEOUT = 10.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True)
    tls = parser.add_mutually_exclusive_group(required=True)
    tls.add_argument("--insecure", action="store_true")
    tls.add_argument("--root-certificates", type=Path)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    return parser.parse_args(argv)


def _client(args: argparse.Namespace, secret: bytes) -> RuntimeHttpClient:
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors: list[Any] = [
        RuntimeVersionHttpInterceptor(component_name="SuperExec"),
        SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={ACQUIRE_TASK_METHOD}),
    ]
    scheme, verify = ("http", False) if args.insecure else ("https", str(args.root_certificates))
    return RuntimeHttpClient(
        f"{scheme}://{args.runtime_api_address}",
        interceptors=interceptors,
        verify=verify,
        timeout=REQUEST_TIMEOUT,
    )


def acquire_token(client: RuntimeHttpClient, parent_pid: int) -> str | None:
    """Poll until the SuperLink queues the run's ServerApp task; its token, or None when
    the SuperLink died first."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest

    request = AcquireTaskRequest(supported_task_types=[SERVER_APP_TASK])
    while is_alive(parent_pid):
        try:
            res = client.AcquireTask(request)
        except Exception as exc:  # noqa: BLE001 - the SuperLink may still be starting
            logger.debug("runtime API not answering: %s", exc)
        else:
            if res.HasField("task") and res.token:
                return str(res.token)
        time.sleep(POLL_INTERVAL)
    return None


def serverapp_command(args: argparse.Namespace) -> list[str]:
    """Flower's ``flwr-serverapp`` for the claimed task, as its SuperExec would start it
    (minus the token: :func:`become_serverapp` adds it)."""
    return [
        flower_executable("flwr-serverapp"),
        "--runtime-api-address",
        args.runtime_api_address,
        *supernode_tls_args(args.root_certificates),
        "--parent-pid",
        str(args.parent_pid),
    ]


def become_serverapp(token: str, command: list[str]) -> None:
    """Replace this process with ``command`` reading ``token`` from an anonymous in-memory
    file (``memfd``) inherited as ``/dev/fd/N``: on no disk and on no command line
    (``flwr-serverapp`` takes ``--token`` or ``--token-file`` only)."""
    fd = os.memfd_create("flwr-token", 0)  # no MFD_CLOEXEC: the exec'd process keeps it
    os.write(fd, token.encode())
    os.execv(command[0], [*command, "--token-file", f"/dev/fd/{fd}"])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    args = _parse(argv)
    try:
        secret = args.secret_file.read_bytes().strip()
    except OSError as exc:
        logger.error("cannot read the SuperExec secret: %s", exc)
        return 2
    client = _client(args, secret)
    try:
        token = acquire_token(client, args.parent_pid)
    finally:
        client.close()
    if token is None:
        logger.info("the SuperLink (pid %s) ended before its run's ServerApp task", args.parent_pid)
        return 1
    command = serverapp_command(args)
    logger.info("claimed the run's ServerApp task; exec %s", Path(command[0]).name)
    sys.stdout.flush()
    sys.stderr.flush()
    become_serverapp(token, command)
    return 0  # not reached: execv does not return


if __name__ == "__main__":
    sys.exit(main())
