"""The global registry: a FastAPI app over an SQLite store (the network's "DNS" of groups).

- ``app``: the app factory (lifespan: store and liveness sweeper) and the HTTP mapping of
  store refusals; ``settings``: :class:`Settings`; ``server``: ``serve`` with uvicorn.
- ``routers``: one ``APIRouter`` per resource (nodes, groups, models, events, health).
- ``deps``: typed dependencies (``StoreDep``, ``TokenDep``, ...); ``parsing``: the
  hand-parsed hot paths; ``middleware``: the body size limit; the API's pydantic models are
  :mod:`mycelium.api`, shared with the clients.
- ``store``: the only code that touches SQLite (importable without FastAPI).

The Python client of this API is :mod:`mycelium.client` (httpx only). Nothing here imports
torch or flwr.
"""
