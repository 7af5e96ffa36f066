"""A uvicorn server that ends the dashboard's event streams before it shuts down."""

from __future__ import annotations

from typing import Any

import uvicorn

from mycelium.dashboard.install import Dashboard


class StreamClosingServer(uvicorn.Server):
    """uvicorn waits up to its graceful timeout for open answers before it stops, and an
    event stream never ends by itself: end the streams first, so shutdown is prompt."""

    def __init__(self, config: uvicorn.Config, dashboard: Dashboard) -> None:
        super().__init__(config)
        self._dashboard = dashboard

    async def shutdown(self, sockets: Any = None) -> None:
        await self._dashboard.feed.close()
        await super().shutdown(sockets=sockets)
