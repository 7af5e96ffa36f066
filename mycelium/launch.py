"""The one place that builds the command lines of a registry and a node agent.

The demo, the benchmarks and the tests start these as real child processes through the
helpers here, so a CLI option is spelled once. Children run ``mycelium_net.py`` by its
absolute path when the checkout holds it (the script's folder then lands on the child's
``sys.path`` whatever its working directory), else ``python -m mycelium.cli`` (an
installed project). Importing this module loads neither torch, flwr nor fastapi.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import httpx

from mycelium import config
from mycelium.procs import ManagedProcess, Spawner, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "mycelium_net.py"

Option = str | int | float | Path | None


class Timers(TypedDict):
    """A node's timer options (keyed, so that ``**FAST_TIMERS`` fills only these)."""

    heartbeat_interval: float
    group_evaluation_interval: float
    cooldown: float


# Timers that let tests and benchmarks see a whole node life in about a minute.
FAST_TIMERS: Timers = {
    "heartbeat_interval": 1,
    "group_evaluation_interval": 4,
    "cooldown": 8,
}


_LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d\s+[A-Z]+\s+[\w.]+:\s+")


class LaunchError(RuntimeError):
    """A child process did not come up (it exited, or missed its readiness deadline)."""


def cli_command(command: str, **options: Option) -> list[str]:
    """argv of ``mycelium <command>`` with each keyword as ``--key-name value``
    (``None`` values left out; ``True`` as a bare flag, ``False`` left out)."""
    if ENTRYPOINT.is_file():
        args = [sys.executable, str(ENTRYPOINT), command]
    else:
        args = [sys.executable, "-m", "mycelium.cli", command]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is None or value is False:
            continue
        args += [flag] if value is True else [flag, str(value)]
    return args


def node_command(**options: Option) -> list[str]:
    """argv of a node agent (``mycelium node --name ... --work-dir ...``)."""
    return cli_command("node", **options)


def registry_command(
    *,
    port: int,
    db: Path | str,
    **options: Option,
) -> list[str]:
    """argv of the registry (``mycelium registry --port P --db DB ...``); ``options`` are
    further ``registry`` options such as ``log_level`` (default ``warning``), ``node_ttl``,
    ``group_ttl``, ``max_model_mb``."""
    # ``log_level`` rides in ``options``, not as a typed parameter: callers pass it through
    # their own ``**options``; keyed first so that it keeps its place in the argv.
    options = {"log_level": "warning", **options}
    where = db if isinstance(db, str) and "://" in db else Path(db).resolve()
    return cli_command("registry", port=port, db=where, **options)


def last_meaningful_line(text: str) -> str:
    """The last line of a log that says something: not blank, not a traceback frame or
    a box drawn by rich; without our log format's ``HH:MM:SS LEVEL logger:`` prefix."""
    for raw in reversed(text.splitlines()):
        line = raw.strip()
        if not line or line.startswith(("File ", "Traceback", "^", "~", "│", "╭", "╰", "─")):
            continue
        if raw.startswith((" ", "\t")):
            continue  # source lines of a traceback
        return _LOG_PREFIX.sub("", line)[:300]
    return "(empty log)"


@dataclass(frozen=True)
class RegistryProcess:
    url: str
    process: ManagedProcess


def registry_is_healthy(url: str) -> bool:
    response = httpx.get(f"{url}/health", timeout=config.HEALTH_TIMEOUT_S)
    return response.status_code == 200 and response.json().get("status") == "ok"


def start_registry(
    *,
    db: Path | str,
    log_path: Path,
    port: int | None = None,
    timeout: float = config.START_TIMEOUT_S,
    name: str = "registry",
    **options: Option,
) -> RegistryProcess:
    """Start the real registry on ``port`` (default: a free one) and wait for /health.

    Raises :class:`LaunchError` naming the last line of its log when it exits or does not
    answer in time; the process is stopped before the error propagates.
    """
    port = port or free_port()
    proc = ManagedProcess(
        name, registry_command(port=port, db=db, **options), log_path=log_path.resolve()
    )
    url = f"http://127.0.0.1:{port}"
    proc.start()
    try:
        wait_for(
            lambda: (not proc.is_running()) or registry_is_healthy(url),
            timeout=timeout,
            interval=0.05,
            what=f"registry at {url}",
        )
        if not proc.is_running():
            raise LaunchError(
                f"{name} exited with {proc.returncode()} at start-up: "
                f"{last_meaningful_line(proc.read_log())}"
            )
    except TimeoutError as exc:
        proc.stop()
        raise LaunchError(f"{name} did not start: {exc}; see {proc.log_path}") from None
    except LaunchError:
        proc.stop()
        raise
    return RegistryProcess(url, proc)


@contextmanager
def registry_process(
    *, db: Path | str, log_path: Path, **options: Option
) -> Iterator[RegistryProcess]:
    """:func:`start_registry` as a context manager that stops the registry on exit."""
    # `options` may also carry start_registry's own port, timeout and name, which mypy
    # cannot tell from the registry's options in one **dict.
    started = start_registry(db=db, log_path=log_path, **options)  # type: ignore[arg-type]
    try:
        yield started
    finally:
        started.process.stop()


def start_agent(
    work_dir: Path,
    *,
    name: str,
    log_path: Path | None = None,
    spawner: Spawner | None = None,
    **options: Option,
) -> ManagedProcess:
    """Start a node agent with its work dir ``WORK_DIR/NAME``; its output goes to
    ``log_path`` (default ``WORK_DIR/NAME.log``). ``spawner``: fork it from a
    :class:`mycelium.zygote.Zygote` instead of starting a new interpreter."""
    work_dir = work_dir.resolve()
    args = node_command(name=name, work_dir=work_dir / name, **options)
    log = (log_path or work_dir / f"{name}.log").resolve()
    return ManagedProcess(name, args, log_path=log, spawner=spawner).start()


@contextmanager
def agent_process(
    work_dir: Path,
    *,
    name: str,
    log_path: Path | None = None,
    stop_timeout: float = 30.0,
    **options: Option,
) -> Iterator[ManagedProcess]:
    """Run a node agent as a child (see :func:`start_agent`); SIGTERM it, and wait, on exit."""
    proc = start_agent(work_dir, name=name, log_path=log_path, spawner=None, **options)
    try:
        yield proc
    finally:
        proc.stop(timeout=stop_timeout)
