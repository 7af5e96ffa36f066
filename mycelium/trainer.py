"""The node agent's warm local trainer and its loopback HTTP endpoint.

Flower starts one ClientApp process per message, so importing torch and loading data
there costs seconds every round. Instead the ClientApp posts the group model to the node
agent's :class:`TrainerServer`, whose :class:`LocalTrainer` keeps torch, the data and the
models warm, and forwards the reply.

Protocol (``POST /fit``): body = model arrays as ``.npz`` bytes (:mod:`mycelium.learning.codec`);
header ``X-Fit-Meta`` = JSON ``{"round": int|null, "flower_node_id": int|null,
"config": {...}}``. Reply 200: ``.npz`` bytes, headers ``X-Num-Examples`` and
``X-Metrics`` (JSON object of floats). Bad input -> 400/411/413 with a JSON
``{"detail": ...}``. ``GET /health`` -> ``{"status": "ok"}``.

This module imports torch only when a :class:`LocalTrainer` is built, so the ClientApp
can use :func:`request_fit` without paying for torch.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np

from mycelium.learning import codec

if TYPE_CHECKING:
    from mycelium.learning.data import ClientData

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
REQUEST_SOCKET_TIMEOUT = 30.0
DEFAULT_FIT_TIMEOUT = 120.0
META_HEADER = "X-Fit-Meta"
NUM_EXAMPLES_HEADER = "X-Num-Examples"
METRICS_HEADER = "X-Metrics"

# Keys of a fit config (same names as the Flower app's run config).
CONFIG_EPOCHS = "local-epochs"
CONFIG_LR = "lr"
CONFIG_BATCH_SIZE = "batch-size"


class FitError(RuntimeError):
    """The trainer endpoint could not be reached or refused the request."""


@dataclass(frozen=True)
class FitResult:
    """What one local fit returns: updated arrays, examples trained on, metrics."""

    arrays: list[np.ndarray]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitParams:
    """Validated hyper-parameters of one fit."""

    epochs: int
    lr: float
    batch_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], defaults: FitParams) -> FitParams:
        """Read ``local-epochs``/``lr``/``batch-size`` from ``config``; ValueError if bad."""
        epochs = config.get(CONFIG_EPOCHS, defaults.epochs)
        lr = config.get(CONFIG_LR, defaults.lr)
        batch_size = config.get(CONFIG_BATCH_SIZE, defaults.batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs <= 1000:
            raise ValueError(f"{CONFIG_EPOCHS} must be an integer in [0, 1000], got {epochs!r}")
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
            raise ValueError(f"{CONFIG_LR} must be a positive finite number, got {lr!r}")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= 1_000_000
        ):
            raise ValueError(f"{CONFIG_BATCH_SIZE} must be a positive integer, got {batch_size!r}")
        return cls(epochs=epochs, lr=float(lr), batch_size=batch_size)


class LocalTrainer:
    """A node's warm trainer: its data, its own local model and a scratch group model.

    ``epochs``/``lr``/``batch_size`` default to :mod:`mycelium.learning.model`'s constants.

    Thread-safe: one lock serialises fits, probes and warm-up.
    """

    def __init__(
        self,
        data: ClientData,
        *,
        seed: int,
        epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from mycelium.learning import model as model_lib  # torch: only where training happens

        self._lib = model_lib
        self._data = data
        self._seed = seed
        core = FitParams(model_lib.EPOCHS, model_lib.LEARNING_RATE, model_lib.BATCH_SIZE)
        given = {CONFIG_EPOCHS: epochs, CONFIG_LR: lr, CONFIG_BATCH_SIZE: batch_size}
        self._defaults = FitParams.from_config(
            {k: v for k, v in given.items() if v is not None}, core
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._local_model = model_lib.create_model(seed)
        self._group_model = model_lib.create_model(seed)
        self._shapes = [a.shape for a in model_lib.get_weights(self._group_model)]
        self._warmup_epochs_done = 0
        self._last_round: int | None = None
        self._last_fit_at: float | None = None
        self._group_score: float | None = None
        self._flower_node_id: int | None = None
        self._last_group_arrays: list[np.ndarray] | None = None

    # -- read-only status (updated on each fit) ---------------------------------------
    @property
    def defaults(self) -> FitParams:
        """Hyper-parameters used when a fit config leaves them out (the learning core's
        constants unless given)."""
        return self._defaults

    @property
    def num_examples(self) -> int:
        return int(len(self._data.y_train))

    @property
    def last_round(self) -> int | None:
        return self._last_round

    @property
    def last_fit_at(self) -> float | None:
        return self._last_fit_at

    @property
    def group_score(self) -> float | None:
        """Accuracy of the latest group model received, on the node's own val split."""
        return self._group_score

    @property
    def flower_node_id(self) -> int | None:
        return self._flower_node_id

    @property
    def last_group_arrays(self) -> list[np.ndarray] | None:
        return self._last_group_arrays

    # -- work -------------------------------------------------------------------------
    def check_arrays(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return ``arrays`` as float32 if they fit the model's shapes, else ValueError."""
        shapes = [tuple(np.shape(a)) for a in arrays]
        if shapes != [tuple(s) for s in self._shapes]:
            raise ValueError(f"model arrays have shapes {shapes}, expected {self._shapes}")
        out = [np.asarray(a, dtype=np.float32) for a in arrays]
        if not all(np.isfinite(a).all() for a in out):
            raise ValueError("model arrays contain NaN or infinity")
        return out

    def fit(
        self,
        arrays: Sequence[np.ndarray],
        config: Mapping[str, Any],
        *,
        round: int | None = None,  # noqa: A002 - the protocol's name
        flower_node_id: int | None = None,
    ) -> FitResult:
        """Score the incoming group model on own val data, then train it locally."""
        params = FitParams.from_config(config, self._defaults)
        incoming = self.check_arrays(arrays)
        lib, data = self._lib, self._data
        with self._lock:
            lib.set_weights(self._group_model, incoming)
            val_loss, val_acc = lib.evaluate(self._group_model, data.x_val, data.y_val)
            train_loss = lib.train(
                self._group_model,
                data.x_train,
                data.y_train,
                epochs=params.epochs,
                lr=params.lr,
                batch_size=params.batch_size,
                seed=self._seed + (round or 0),
            )
            post_loss, post_acc = lib.evaluate(self._group_model, data.x_val, data.y_val)
            updated = lib.get_weights(self._group_model)
            self._last_round = round
            self._last_fit_at = self._clock()
            self._group_score = float(val_acc)
            if flower_node_id is not None:
                self._flower_node_id = flower_node_id
            self._last_group_arrays = [a.copy() for a in incoming]
        metrics = {
            "val_accuracy": float(val_acc),
            "val_loss": float(val_loss),
            "train_loss": float(train_loss),
            "post_val_accuracy": float(post_acc),
            "post_val_loss": float(post_loss),
        }
        return FitResult(arrays=updated, num_examples=self.num_examples, metrics=metrics)

    def evaluate_arrays(self, arrays: Sequence[np.ndarray]) -> tuple[float, float]:
        """(loss, accuracy) of a model (e.g. a candidate group's) on own val split."""
        checked = self.check_arrays(arrays)
        with self._lock:
            self._lib.set_weights(self._group_model, checked)
            loss, acc = self._lib.evaluate(self._group_model, self._data.x_val, self._data.y_val)
        return float(loss), float(acc)

    def warm_up(self, epochs: int) -> float:
        """Train the node's own local-only model for ``epochs``; returns the mean loss."""
        with self._lock:
            loss = self._lib.train(
                self._local_model,
                self._data.x_train,
                self._data.y_train,
                epochs=epochs,
                lr=self._defaults.lr,
                batch_size=self._defaults.batch_size,
                seed=self._seed + self._warmup_epochs_done,
            )
            self._warmup_epochs_done += epochs
        return float(loss)

    def local_score(self) -> float:
        """Accuracy of the node's own local-only model on its val split."""
        with self._lock:
            _, acc = self._lib.evaluate(self._local_model, self._data.x_val, self._data.y_val)
        return float(acc)

    def local_arrays(self) -> list[np.ndarray]:
        """The local-only model's arrays (e.g. to seed a group this node founds)."""
        with self._lock:
            return self._lib.get_weights(self._local_model)


# -- HTTP endpoint ------------------------------------------------------------------------
class _BadRequest(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_meta(raw: str | None) -> tuple[int | None, int | None, dict[str, Any]]:
    if not raw:
        return None, None, {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _BadRequest(400, f"{META_HEADER} is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise _BadRequest(400, f"{META_HEADER} must be a JSON object")
    round_, node_id, config = meta.get("round"), meta.get("flower_node_id"), meta.get("config")
    for name, value in (("round", round_), ("flower_node_id", node_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _BadRequest(400, f"{name} must be an integer or null")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise _BadRequest(400, "config must be a JSON object")
    return round_, node_id, config


class _Handler(BaseHTTPRequestHandler):
    server: _TrainerHTTPServer
    timeout = REQUEST_SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("trainer http %s: %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?", 1)[0] == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, {"detail": f"no such path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?", 1)[0] != "/fit":
            self._discard_body()
            self._send_json(404, {"detail": f"no such path {self.path}"})
            return
        try:
            body = self._read_body()
            round_, node_id, config = _parse_meta(self.headers.get(META_HEADER))
            try:
                arrays = codec.bytes_to_weights(body)
            except Exception as exc:  # noqa: BLE001 - any decode failure is the client's
                raise _BadRequest(400, f"body is not an npz of arrays: {exc}") from None
            result = self.server.trainer.fit(arrays, config, round=round_, flower_node_id=node_id)
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
        self.send_header(NUM_EXAMPLES_HEADER, str(result.num_examples))
        self.send_header(METRICS_HEADER, json.dumps(result.metrics))
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
    config: Mapping[str, Any],
    *,
    round: int | None = None,  # noqa: A002 - the protocol's name
    flower_node_id: int | None = None,
    timeout: float = DEFAULT_FIT_TIMEOUT,
) -> FitResult:
    """POST ``arrays`` to a TrainerServer's /fit; raises :class:`FitError` on failure."""
    meta = {"round": round, "flower_node_id": flower_node_id, "config": dict(config)}
    request = urllib.request.Request(
        url.rstrip("/") + "/fit",
        data=codec.weights_to_bytes(list(arrays)),
        headers={"Content-Type": "application/octet-stream", META_HEADER: json.dumps(meta)},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            num_examples = int(response.headers.get(NUM_EXAMPLES_HEADER, "0"))
            metrics = json.loads(response.headers.get(METRICS_HEADER, "{}"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise FitError(f"trainer at {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FitError(f"trainer at {url} unreachable: {exc}") from None
    except ValueError as exc:
        raise FitError(f"trainer at {url} sent a bad reply: {exc}") from None
    return FitResult(
        arrays=codec.bytes_to_weights(body),
        num_examples=num_examples,
        metrics={str(k): float(v) for k, v in metrics.items()},
    )
