"""Pure ASGI middleware: the rules every request body obeys, checked before routing.

- **Size**: a JSON body up to 1 MiB, a model upload up to ``model_limit``; beyond, 413. A
  declared Content-Length is checked up front; a chunked body is read up to the limit.
- **Type**: a body sent to a JSON route (every route but the model upload) must declare
  ``Content-Type: application/json`` (or ``application/*+json``); otherwise 422, as FastAPI
  itself answers for the routes it parses. One rule, so the hand-parsed fast paths
  (the heartbeat) cannot drift from the others.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mycelium.config import MiB

JSON_BODY_LIMIT = MiB


def is_json(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json`` (parameters allowed).

    The media type is compared by hand: ``email.message`` (what FastAPI uses) costs ~20 us,
    a tenth of a heartbeat.
    """
    if not content_type:
        return False
    mime = content_type.partition(";")[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


class BodyRules:
    """Refuse oversized bodies (413) and JSON-route bodies that are not JSON (422)."""

    def __init__(self, app: ASGIApp, *, model_limit: int) -> None:
        self.app = app
        self.model_limit = model_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        is_model = scope["path"].endswith("/model")
        limit = self.model_limit if is_model else JSON_BODY_LIMIT
        length, content_type = _headers(scope)
        wrong_type = not is_model and not is_json(content_type)
        if length is not None:
            if length > limit:
                await _too_large(send, limit)
            elif length > 0 and wrong_type:
                await _not_json(send, content_type)
            else:
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
        if body and wrong_type:
            await _not_json(send, content_type)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body)}]), send)


def _headers(scope: Scope) -> tuple[int | None, str | None]:
    """(Content-Length or None when absent or unreadable, Content-Type or None)."""
    length: int | None = None
    content_type: str | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"content-type":
            content_type = value.decode("latin-1")
    return length, content_type


def _replay(messages: list[Message]) -> Receive:
    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    return receive


async def _answer(send: Send, status_code: int, detail: Any) -> None:
    response = JSONResponse({"detail": detail}, status_code=status_code)
    await response({"type": "http"}, _replay([]), send)


async def _too_large(send: Send, limit: int) -> None:
    await _answer(send, 413, f"request body is larger than the limit of {limit} bytes")


async def _not_json(send: Send, content_type: str | None) -> None:
    error = {
        "type": "content_type",
        "loc": ["header", "content-type"],
        "msg": f"expected application/json, got {(content_type or 'no Content-Type')[:100]}",
    }
    await _answer(send, 422, [error])
