"""The warm trainer's loopback HTTP endpoint (the HTTP side of the warm-trainer bridge).

``POST /fit``: body = model arrays as ``.npz`` bytes (:mod:`mycelium.learning.codec`), header
:class:`~mycelium.flower.protocol.FitMeta`. Reply 200: ``.npz`` bytes, headers
:class:`~mycelium.flower.protocol.FitReplyMeta`. Bad input -> 400/411/413 with a JSON
``{"detail": ...}``. ``GET /health`` -> ``{"status": "ok"}``.

No torch here: the ClientApp uses :func:`request_fit`; the node agent serves its
:class:`mycelium.flower.trainer.LocalTrainer` with :class:`TrainerServer`.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np

from mycelium.config import MAX_MODEL_BYTES
from mycelium.flower.errors import FitError
from mycelium.flower.protocol import (
    FIT_PATH,
    FIT_TIMEOUT_S,
    HEALTH_PATH,
    META_HEADER,
    FitMeta,
    FitReplyMeta,
)
from mycelium.flower.trainer import FitResult
from mycelium.learning import codec

if TYPE_CHECKING:
    from mycelium.flower.trainer import LocalTrainer

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = MAX_MODEL_BYTES
REQUEST_SOCKET_TIMEOUT = 30.0


class _BadRequest(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: _TrainerHTTPServer
    timeout = REQUEST_SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("trainer http %s: %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?", 1)[0] == HEALTH_PATH:
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, {"detail": f"no such path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?", 1)[0] != FIT_PATH:
            self._discard_body()
            self._send_json(404, {"detail": f"no such path {self.path}"})
            return
        try:
            body = self._read_body()
            meta = FitMeta.from_header(self.headers.get(META_HEADER))  # ValueError: 400
            try:
                arrays = codec.bytes_to_weights(body)
            except Exception as exc:  # noqa: BLE001 - any decode failure is the client's
                raise _BadRequest(400, f"body is not an npz of arrays: {exc}") from None
            result = self.server.trainer.fit(
                arrays, meta.config, round=meta.round, flower_node_id=meta.flower_node_id
            )
        except _BadRequest as exc:
            self._send_json(exc.status, {"detail": str(exc)})
            return
        except ValueError as exc:
            self._send_json(400, {"detail": str(exc)})
            return
        except Exception:
            logger.exception("local fit failed")
            self._send_json(500, {"detail": "local fit failed; see the node's log"})
            return
        self._send_fit(result)

    def _read_body(self) -> bytes:
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self.close_connection = True
            raise _BadRequest(411, "Content-Length required")
        try:
            length = int(raw_length)
        except ValueError:
            self.close_connection = True
            raise _BadRequest(400, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _BadRequest(413, f"body must be 0..{MAX_BODY_BYTES} bytes")
        if length == 0:
            raise _BadRequest(400, "empty body: expected npz model arrays")
        return self.rfile.read(length)

    def _discard_body(self) -> None:
        self.close_connection = True

    def _send_fit(self, result: FitResult) -> None:
        payload = codec.weights_to_bytes(result.arrays)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in FitReplyMeta(result.num_examples, result.metrics).to_headers().items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, obj: Mapping[str, Any]) -> None:
        payload = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


class _TrainerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], trainer: LocalTrainer) -> None:
        super().__init__(address, _Handler)
        self.trainer = trainer


class TrainerServer:
    """Serves a :class:`LocalTrainer` on loopback from a daemon thread."""

    def __init__(self, trainer: LocalTrainer, host: str = "127.0.0.1", port: int = 0) -> None:
        self._trainer = trainer
        self._address = (host, port)
        self._server: _TrainerHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("TrainerServer is not started")
        host, port = self._server.server_address[:2]
        if isinstance(host, bytes):  # typeshed allows it (AF_UNIX); a TCP server has a str
            host = host.decode()
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Bind and serve in a daemon thread; returns the base URL."""
        if self._server is None:
            self._server = _TrainerHTTPServer(self._address, self._trainer)
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="trainer-server", daemon=True
            )
            self._thread.start()
            logger.debug("trainer server listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def request_fit(
    url: str,
    arrays: Sequence[np.ndarray],
    meta: FitMeta,
    *,
    timeout: float = FIT_TIMEOUT_S,
) -> FitResult:
    """POST ``arrays`` with ``meta`` to a TrainerServer's /fit; raises :class:`FitError`
    on failure."""
    request = urllib.request.Request(
        url.rstrip("/") + FIT_PATH,
        data=codec.weights_to_bytes(list(arrays)),
        headers={"Content-Type": "application/octet-stream", META_HEADER: meta.to_header()},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            reply = FitReplyMeta.from_headers(dict(response.headers.items()))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise FitError(f"trainer at {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FitError(f"trainer at {url} unreachable: {exc}") from None
    except ValueError as exc:
        raise FitError(f"trainer at {url} sent a bad reply: {exc}") from None
    return FitResult(
        arrays=codec.bytes_to_weights(body),
        num_examples=reply.num_examples,
        metrics=dict(reply.metrics),
    )
