"""The global registry of learning groups: a thin face over :mod:`mycelium.registry`.

``create_app(Settings(...))`` builds the FastAPI app; ``serve(...)`` runs it with uvicorn
(``python mycelium_net.py registry`` calls it). This module imports neither torch nor flwr.
"""

from __future__ import annotations

from mycelium.registry.app import create_app
from mycelium.registry.server import RegistryStartError, serve
from mycelium.registry.settings import Settings

__all__ = ["RegistryStartError", "Settings", "create_app", "serve"]
