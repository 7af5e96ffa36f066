"""Flower processes: where their executables are, the environment they run in, and waiting
for one to become ready while it may die."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from mycelium.flower.errors import ChildExited, FlowerNotInstalled
from mycelium.procs import ManagedProcess, child_env, wait_for

T = TypeVar("T")


def flower_executable(name: str) -> str:
    """Absolute path of a Flower console script (``flower-superlink``, ``flower-supernode``,
    ``flwr``): beside the running interpreter first (a virtual environment's scripts folder,
    also when it is not activated), then on PATH. :class:`FlowerNotInstalled` if missing."""
    for folder in _script_dirs():
        found = shutil.which(name, path=str(folder))
        if found is not None:
            return str(Path(found).absolute())
    found = shutil.which(name)
    if found is None:
        raise FlowerNotInstalled(
            f"{name} not found beside {sys.executable} nor on PATH (install flwr 1.42 "
            "into this interpreter's environment)"
        )
    return str(Path(found).absolute())


def _script_dirs() -> list[Path]:
    """The interpreter's scripts folder, then the folder ``sys.executable`` is in."""
    folders: list[Path] = []
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if folder and Path(folder) not in folders:
            folders.append(Path(folder))
    return folders


def new_superexec_secret(flwr_home: Path) -> tuple[bytes, Path]:
    """A fresh SuperExec secret in ``FLWR_HOME/superexec.secret`` (0600): only its holder,
    our executor or launcher, may claim that Flower process's tasks. (secret, file)."""
    from mycelium.net.certs import write_private

    secret = secrets.token_hex(32).encode()
    path = flwr_home / "superexec.secret"
    write_private(path, secret)
    return secret, path


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a Flower process: no telemetry, no update check, a private absolute
    FLWR_HOME (created), unbuffered output, the lean allocator and thread settings of
    :func:`mycelium.procs.child_env` (Flower's own children inherit them).

    Our Flower app (ServerApp, ClientApp, SuperExec children) must import the very
    ``mycelium`` this process runs, not whichever checkout was last installed with
    ``pip install -e``: the folder holding this process's package goes first on
    ``PYTHONPATH``."""
    flwr_home = Path(flwr_home).absolute()
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = child_env()
    # Flower's own children (the SuperLink starts `flower-superexec` by name) must find
    # their executables where ours were found, also when the venv is not activated.
    scripts = os.pathsep.join(str(folder) for folder in _script_dirs())
    env["PATH"] = os.pathsep.join(p for p in (scripts, env.get("PATH", "")) if p)
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_HOME": str(flwr_home),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_project_root()), env.get("PYTHONPATH", "")) if p
    )
    if extra:
        env.update(extra)
    return env


def _project_root() -> Path:
    """The folder that holds the ``mycelium`` package this process imported."""
    import mycelium

    return Path(mycelium.__file__).resolve().parent.parent


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
