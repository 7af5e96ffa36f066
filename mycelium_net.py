"""Mycelium Net: a network of federated-learning networks.

The one Typer entrypoint; the commands live in :mod:`mycelium.cli` (also installed as the
``mycelium`` console script by ``pip install .``).
"""

from __future__ import annotations

from mycelium.cli import app

if __name__ == "__main__":
    app()
