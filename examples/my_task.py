"""Your own Mycelium Net task, in a file outside the package (see docs/tasks.md).

A softmax-regression classifier on scikit-learn's bundled 8x8 digits. Subclassing
``ImageTask`` gives the clustered scenarios (rotate, permute, mixed), ``--data FILE.npz``
loading, and a seeded SGD ``train`` (with FedProx's term) and ``evaluate``; the task only
says what its data and model are. It has no batched methods, so the simulation trains its
models one by one.

    python mycelium_net.py bench learning --task examples/my_task.py:TASK \\
        --scenario permute --clusters 2 --clients 6 --rounds 5
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mycelium.learning.data import Dataset
from mycelium.learning.tasks.base import Hyper, ImageTask


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 8, 8) float32 in [0, 1], labels int64): replace with your own data."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


class LinearDigits(ImageTask):
    name = "linear-digits"  # what the registry lists; groups are per task
    dataset = Dataset("my-digits", image_shape=(8, 8), num_classes=10, load=load_images)
    hyper = Hyper(epochs=2, lr=0.5, batch_size=32)  # a group may override each per round

    def create_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Linear(64, 10)  # state_dict order = the order of arrays on the wire


TASK = LinearDigits()
