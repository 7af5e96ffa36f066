"""Pure ASGI middleware: the request body size limit (413)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse

from mycelium.config import MiB

JSON_BODY_LIMIT = MiB

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse bodies over 1 MiB (over ``model_limit`` for model uploads) with 413.

    A declared Content-Length is checked up front; a chunked body is read up to the limit.
    """

    def __init__(self, app: ASGIApp, *, model_limit: int) -> None:
        self.app = app
        self.model_limit = model_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.model_limit if scope["path"].endswith("/model") else JSON_BODY_LIMIT
        length = _content_length(scope)
        if length is not None:
            if length > limit:
                await _too_large(send, limit)
                return
            await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _too_large(send, limit)
                return
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body)}]), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message]) -> Receive:
    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    return receive


async def _too_large(send: Send, limit: int) -> None:
    response = JSONResponse(
        {"detail": f"request body is larger than the limit of {limit} bytes"}, status_code=413
    )
    await response({"type": "http"}, _replay([]), send)
