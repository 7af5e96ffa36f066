"""The registry's read-only live dashboard and its operator metrics.

- ``stream``: ``EventFeed``, the events log followed for server-sent-event clients;
- ``sources``: the injected async readers it draws from (events, groups, nodes, stats, the
  log's digest), and the state and snapshot made of them;
- ``models``: what the page is sent (groups, nodes, the snapshot), as pydantic models;
- ``metrics``: Prometheus metrics and the ASGI middleware that times requests;
- ``routes``: ``/dashboard`` (page + vendored static files), ``/dashboard/snapshot``,
  ``/events/stream``, ``/metrics``;
- ``install``: :func:`install_dashboard` (hooks all that into an app); ``server``: a
  uvicorn server that ends the streams at shutdown;
- ``static/``: the page, its script, and the vendored Cytoscape.js and uPlot with their
  licences.
"""
