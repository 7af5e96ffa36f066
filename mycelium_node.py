"""The Mycelium Net node agent, as a Python API: ``NodeConfig`` and ``run_node``.

The agent itself is the :mod:`mycelium.node` package (``mycelium node`` on the command line).
"""

from mycelium.node.agent import NodeAgent, run_node
from mycelium.node.config import FatalNodeError, NodeConfig

__all__ = ["FatalNodeError", "NodeAgent", "NodeConfig", "run_node"]
