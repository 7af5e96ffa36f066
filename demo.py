"""The one-command demo (``python mycelium_net.py demo``) as a Python API.

A thin face over :mod:`mycelium.demo`: build a :class:`DemoConfig`, call :func:`run_demo`
(with a :class:`mycelium.demo.live.LiveView` to watch it in a terminal).
"""

from mycelium.demo.config import DemoConfig
from mycelium.demo.observation import DemoFailed
from mycelium.demo.run import run_demo

__all__ = ["DemoConfig", "DemoFailed", "run_demo"]
