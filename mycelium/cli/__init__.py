"""The Typer command line, one module per command group.

``app`` assembles ``registry``, ``node``, ``demo``, ``group`` and ``bench``; the faces
``mycelium_net.py`` and the ``mycelium`` console script run it. Each command imports its
heavy modules (torch, flwr, fastapi) inside its body, so ``--help`` answers at once.
Tracebacks never show local variables (they may hold tokens).
"""

from __future__ import annotations

import typer

from mycelium.cli.bench import bench_app
from mycelium.cli.demo import demo
from mycelium.cli.group import group
from mycelium.cli.node import node
from mycelium.cli.registry import registry

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Mycelium Net: learning groups on Flower, found through a global registry.",
)
app.command()(registry)
app.command()(node)
app.command()(demo)
app.command()(group)
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Console-script entry point (``mycelium``)."""
    app(prog_name="mycelium")


__all__ = ["app", "main"]
