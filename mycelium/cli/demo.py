"""``mycelium demo``: a registry and N nodes on one machine, watched live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mycelium import config
from mycelium.cli._common import LogLevel, TaskRef, absolute_task_ref, fail, setup_logging
from mycelium.demo.config import DemoConfig

DEFAULTS = DemoConfig()


def demo(
    nodes: Annotated[int, typer.Option(help="Number of nodes.", min=2, max=32)] = DEFAULTS.nodes,
    scenario: Annotated[str, typer.Option(help="rotate, permute or mixed.")] = DEFAULTS.scenario,
    task: TaskRef = DEFAULTS.task,
    clusters: Annotated[
        int, typer.Option(help="Latent clusters.", min=1, max=8)
    ] = DEFAULTS.clusters,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds at most (default: 180 + 3 per node).", min=10
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the data split.")] = DEFAULTS.seed,
    port: Annotated[
        int | None,
        typer.Option(
            help="Registry port (default 8000 when free, else any free port).", min=1, max=65535
        ),
    ] = None,
    keep_running: Annotated[
        bool, typer.Option(help="Leave the network up after the summary, until Ctrl-C.")
    ] = False,
    fork_agents: Annotated[
        bool,
        typer.Option(
            "--fork-agents/--separate-agents",
            help="Fork the node agents from one process that imported torch once (shared "
            "memory, no import per node); --separate-agents: one interpreter each.",
        ),
    ] = DEFAULTS.fork_agents,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            resolve_path=True,
            help="Folder for logs, report and figure (default: a new ./mycelium-demo-*).",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(resolve_path=True, help="Write the JSON report here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(resolve_path=True, help="Write the PNG figure here.")
    ] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Start a registry and N nodes; watch groups form, learn and migrate."""
    setup_logging(log_level)
    if scenario not in config.SCENARIOS:
        raise fail(f"--scenario must be rotate, permute or mixed, not {scenario!r}")
    from mycelium.learning.data import check_scenario

    try:
        check_scenario(scenario, clusters)
    except ValueError as exc:
        raise fail(f"--clusters {clusters}: {exc}") from None
    if port is not None and not _port_free(port):
        raise fail(f"port {port} is already in use")
    import signal

    from rich.console import Console

    from mycelium.demo.live import LiveView
    from mycelium.demo.observation import DemoFailed
    from mycelium.demo.run import run_demo

    def _sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _sigterm)
    demo_config = DemoConfig(
        nodes=nodes,
        task=absolute_task_ref(task),
        scenario=scenario,
        clusters=clusters,
        duration=duration,
        seed=seed,
        port=port,
        keep_running=keep_running,
        fork_agents=fork_agents,
        run_dir=run_dir,
        report_path=report,
        plot_path=plot,
    )
    view = LiveView(Console())
    try:
        result = run_demo(demo_config, view)
    except KeyboardInterrupt:
        raise fail("interrupted; every process was stopped") from None
    except DemoFailed as exc:
        raise fail(f"{exc}; report {exc.report_path}") from None
    except (RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        view.close()
    if result["groups"] == []:
        raise fail("no group formed; see the logs in the run folder")


def _port_free(port: int) -> bool:
    from mycelium.procs import port_is_free

    return port_is_free(port)
