"""Clustered non-IID image data for clients, deterministic from (scenario, clusters, seed, clients).

Data: a :class:`Dataset` of labelled images with pixels in [0, 1], flattened to float32
features. The default, :data:`DIGITS`, is scikit-learn's bundled ``load_digits`` (1,797 8x8
images, 10 classes, no download); a task may pass its own (``mycelium.learning.tasks.mnist`` does).

The split every process computes identically:

* the images are shuffled with ``seed``; the first ``TEST_FRACTION`` form the test pool,
  the rest the training pool;
* client ``index`` of ``num_clients`` belongs to cluster ``index % clusters`` unless a cluster
  is given explicitly; its *rank* is ``index // clusters`` (``index`` for ``mixed``);
* ``rotate``: cluster ``c`` sees every image rotated by ``c x 90`` degrees (at most 4 clusters);
  ``permute``: cluster ``c`` relabels with its own fixed permutation of the 10 labels
  (cluster 0 keeps the identity); ``mixed``: no clusters, each client draws its labels from a
  Dirichlet(``DIRICHLET_ALPHA``) distribution (label skew) and ``cluster`` is ``None``;
* a client takes ``shard = max(pool // per_cluster, MIN_SHARD)`` training-pool images
  (at most the dataset's ``max_shard``)
  starting at ``rank * shard`` (wrapping), so shards are disjoint within a cluster whenever
  the pool is large enough, and overlap (never run out) for thousands of clients;
  ``mixed`` draws its ``shard`` images by label from a generator seeded with
  ``(seed, index)``; the shard is split ``1 - VAL_FRACTION`` train / ``VAL_FRACTION`` val;
* ``label_skew`` ALPHA (``--label-skew``): inside each cluster of ``rotate`` and ``permute``
  too, the client draws its ``shard`` images by label from Dirichlet(ALPHA), exactly as
  ``mixed`` does (shards of one cluster then overlap); on ``mixed`` it replaces
  ``DIRICHLET_ALPHA``;
* test data is the client's own: drawn from the test pool seen through its cluster's
  transform, with its own label mix. A client whose labels are not skewed (``rotate`` and
  ``permute`` without ``label_skew``) draws IID from the pool, so its test split is the whole
  pool (the shared arrays are read-only and reused by every such client of the cluster);
  a skewed client's test split has ``len(pool)`` images whose label counts follow the label
  frequencies of its own train + val shard (largest remainders), each label's images taken
  in pool order from a seeded offset, repeated when the pool has fewer of that label.
"""

from __future__ import annotations

import functools
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCENARIOS = ("rotate", "permute", "mixed")
ROTATE_CLUSTERS = 4  # rot90 by 0, 1, 2, 3 quarter turns: a fifth cluster repeats the first
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
MIN_SHARD = 120
DIRICHLET_ALPHA = 0.5
NUM_CLASSES = 10  # of DIGITS
NUM_FEATURES = 64  # of DIGITS


@dataclass(frozen=True)
class Dataset:
    """A labelled image source: ``load()`` returns (images (n, H, W) float32 in [0, 1],
    labels int64 in 0..num_classes-1). Hashable, so its shuffled pools are cached.
    ``max_shard`` caps a client's images (train + val), e.g. to keep a simulation cheap."""

    name: str
    image_shape: tuple[int, int]
    num_classes: int
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    max_shard: int | None = None

    @property
    def num_features(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


@dataclass(frozen=True)
class ClientData:
    """One client's splits; ``cluster`` is the latent cluster (None when there is none)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    cluster: int | None


def make_partition(
    *,
    scenario: str,
    clusters: int,
    index: int,
    num_clients: int,
    seed: int,
    cluster: int | None = None,
    dataset: Dataset | None = None,
    label_skew: float | None = None,
) -> ClientData:
    """Client ``index`` of ``num_clients`` (see the module docstring for the exact rule)."""
    dataset = dataset or DIGITS
    _check_args(scenario, clusters, num_clients, seed)
    check_label_skew(label_skew)
    if not 0 <= index < num_clients:
        raise ValueError(f"partition index {index} outside 0..{num_clients - 1}")
    if cluster is not None and not 0 <= cluster < clusters:
        raise ValueError(f"cluster {cluster} outside 0..{clusters - 1}")
    if scenario == "mixed":
        alpha = DIRICHLET_ALPHA if label_skew is None else label_skew
        return _skewed_client(dataset, "mixed", None, index, num_clients, seed, alpha)
    chosen = index % clusters if cluster is None else cluster
    if label_skew is not None:
        per_cluster = math.ceil(num_clients / clusters)
        return _skewed_client(dataset, scenario, chosen, index, per_cluster, seed, label_skew)
    return _clustered_client(dataset, scenario, clusters, chosen, index, num_clients, seed)


def check_label_skew(label_skew: float | None) -> None:
    """ValueError unless ``label_skew`` is None or a positive, finite Dirichlet ALPHA."""
    if label_skew is not None and not (math.isfinite(label_skew) and label_skew > 0):
        raise ValueError(f"--label-skew must be a positive number, got {label_skew}")


def make_federation(
    *,
    scenario: str,
    clusters: int,
    num_clients: int,
    seed: int,
    dataset: Dataset | None = None,
    label_skew: float | None = None,
) -> list[ClientData]:
    """All ``num_clients`` clients of a federation (cluster ``i % clusters`` for client i)."""
    _check_args(scenario, clusters, num_clients, seed)
    return [
        make_partition(
            scenario=scenario,
            clusters=clusters,
            index=i,
            num_clients=num_clients,
            seed=seed,
            dataset=dataset,
            label_skew=label_skew,
        )
        for i in range(num_clients)
    ]


def load_npz(path: Path | str, *, seed: int, dataset: Dataset | None = None) -> ClientData:
    """A user's own ``.npz`` with ``x`` (n, H*W) or (n, H, W) in [0, 1] and int labels ``y``
    (H, W and the label range of ``dataset``, default :data:`DIGITS`: 8x8, 0..9).

    The rows are shuffled with ``seed`` and split train / val / test 60 / 20 / 20.
    """
    x, y = _read_npz(Path(path), dataset or DIGITS)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_val = max(1, round(len(y) * VAL_FRACTION))
    n_test = max(1, round(len(y) * TEST_FRACTION))
    n_train = len(y) - n_val - n_test
    return ClientData(
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_val=x[n_train : n_train + n_val],
        y_val=y[n_train : n_train + n_val],
        x_test=x[n_train + n_val :],
        y_test=y[n_train + n_val :],
        cluster=None,
    )


def _read_npz(path: Path, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files if name in ("x", "y")}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, AttributeError) as exc:
        raise ValueError(f"{path}: cannot read as .npz without pickle ({exc})") from exc
    if set(arrays) != {"x", "y"}:
        raise ValueError(f"{path}: needs arrays 'x' and 'y', found {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    x = x.reshape(len(x), -1) if x.ndim == 3 and x.shape[1:] == dataset.image_shape else x
    if x.ndim != 2 or x.shape[1] != dataset.num_features:
        height, width = dataset.image_shape
        raise ValueError(
            f"{path}: x must have shape (n, {dataset.num_features}) or (n, {height}, {width}) "
            f"for {dataset.name}, got {x.shape}"
        )
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: y must be {len(x)} integer labels, got {y.dtype} {y.shape}")
    if len(y) < 5:
        raise ValueError(f"{path}: needs at least 5 samples, got {len(y)}")
    if y.min() < 0 or y.max() >= dataset.num_classes:
        raise ValueError(f"{path}: labels must be in 0..{dataset.num_classes - 1}")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: x contains NaN or infinity")
    return x.astype(np.float32), y.astype(np.int64)


def check_scenario(scenario: str, clusters: int) -> None:
    """ValueError unless ``clusters`` clusters of ``scenario`` are all different data:
    ``rotate`` has :data:`ROTATE_CLUSTERS` (cluster 4 would see cluster 0's images again,
    and a network that rightly trains them together would read as impure)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if clusters < 1:
        raise ValueError(f"clusters must be >= 1, got {clusters}")
    if scenario == "rotate" and clusters > ROTATE_CLUSTERS:
        raise ValueError(
            f"rotate has {ROTATE_CLUSTERS} distinct clusters (0, 90, 180, 270 degrees), not "
            f"{clusters}: more would repeat a rotation; use permute for more clusters"
        )


def _check_args(scenario: str, clusters: int, num_clients: int, seed: int) -> None:
    check_scenario(scenario, clusters)
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, read straight from the file it ships: importing
    ``sklearn.datasets`` costs a node ~60 MB (PSS) it never uses again."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ValueError("the digits task needs scikit-learn installed (its data file)")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as lines:
        data = np.loadtxt(lines, delimiter=",", dtype=np.float64)
    images = data[:, :-1].reshape(-1, 8, 8)
    return (images / 16.0).astype(np.float32), data[:, -1].astype(np.int64)


DIGITS = Dataset("digits", (8, 8), NUM_CLASSES, _load_digits)


@functools.lru_cache(maxsize=8)
def _pools(dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_pool, y_pool, x_test, y_test) of the shuffled dataset; images as (n, H, W)."""
    images, labels = dataset.load()
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * TEST_FRACTION)
    test, pool = order[:n_test], order[n_test:]
    arrays = (images[pool], labels[pool], images[test], labels[test])
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _transform(
    dataset: Dataset,
    scenario: str,
    cluster: int,
    seed: int,
    images: np.ndarray,
    labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``cluster``'s view of (images (n, H, W), labels) as (x (n, H*W), y)."""
    if scenario == "rotate":
        images = np.rot90(images, k=cluster % ROTATE_CLUSTERS, axes=(1, 2))
    elif scenario == "permute" and cluster > 0:
        permutation = np.random.default_rng([seed, cluster]).permutation(dataset.num_classes)
        labels = permutation[labels]
    x = np.ascontiguousarray(images.reshape(len(images), dataset.num_features), dtype=np.float32)
    return x, labels.astype(np.int64)


@functools.lru_cache(maxsize=64)
def _cluster_view(
    dataset: Dataset, scenario: str, cluster: int, seed: int
) -> tuple[np.ndarray, ...]:
    x_pool, y_pool, x_test, y_test = _pools(dataset, seed)
    arrays = (
        *_transform(dataset, scenario, cluster, seed, x_pool, y_pool),
        *_transform(dataset, scenario, cluster, seed, x_test, y_test),
    )
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _clustered_client(
    dataset: Dataset,
    scenario: str,
    clusters: int,
    cluster: int,
    index: int,
    num_clients: int,
    seed: int,
) -> ClientData:
    x_pool, y_pool, x_test, y_test = _cluster_view(dataset, scenario, cluster, seed)
    per_cluster = math.ceil(num_clients / clusters)
    shard = _cap(dataset, max(len(y_pool) // per_cluster, MIN_SHARD))
    rows = (np.arange(shard) + (index // clusters) * shard) % len(y_pool)
    return _split(x_pool[rows], y_pool[rows], x_test, y_test, cluster)


def _skewed_client(
    dataset: Dataset,
    scenario: str,
    cluster: int | None,
    index: int,
    sharing: int,
    seed: int,
    alpha: float,
) -> ClientData:
    """A client drawing its labels from Dirichlet(``alpha``) in its cluster's view (``mixed``:
    the plain view, ``cluster`` None); ``sharing`` clients share the pool; its test split
    follows its own label mix (:func:`own_test_split`)."""
    view = 0 if cluster is None else cluster
    x_pool, y_pool, x_test, y_test = _cluster_view(dataset, scenario, view, seed)
    shard = _cap(dataset, max(len(y_pool) // sharing, MIN_SHARD))
    rng = np.random.default_rng([seed, index])
    weights = rng.dirichlet(np.full(dataset.num_classes, alpha))[y_pool]
    rows = rng.choice(len(y_pool), size=shard, replace=False, p=weights / weights.sum())
    tests = own_test_split(y_pool[rows], y_test, np.random.default_rng([seed, index, 1]))
    return _split(x_pool[rows], y_pool[rows], x_test[tests], y_test[tests], cluster)


def own_test_split(y_own: np.ndarray, y_test: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of the test pool (labels ``y_test``) for a client whose shard has labels
    ``y_own``: ``len(y_test)`` rows whose label counts are the largest-remainder rounding of
    the shard's label frequencies; label c's rows are its pool rows in order from a seeded
    offset, wrapping (repeated) when the client needs more than the pool holds. A label the
    pool lacks gives its count to the shard's other labels."""
    classes = max(int(y_own.max()), int(y_test.max())) + 1
    own = np.bincount(y_own, minlength=classes).astype(np.float64)
    own[np.bincount(y_test, minlength=classes) == 0] = 0.0
    if own.sum() == 0:
        return np.arange(len(y_test))
    counts = _largest_remainder(own / own.sum(), len(y_test))
    parts = []
    for label in np.flatnonzero(counts):
        of_label = np.flatnonzero(y_test == label)
        start = int(rng.integers(len(of_label)))
        parts.append(of_label[(start + np.arange(counts[label])) % len(of_label)])
    rows: np.ndarray = np.sort(np.concatenate(parts))
    return rows


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``shares`` (which sum to 1)."""
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    result: np.ndarray = counts
    return result


def _cap(dataset: Dataset, shard: int) -> int:
    return shard if dataset.max_shard is None else min(shard, dataset.max_shard)


def _split(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, cluster: int | None
) -> ClientData:
    n_val = max(1, round(len(y) * VAL_FRACTION))
    return ClientData(
        x_train=x[n_val:],
        y_train=y[n_val:],
        x_val=x[:n_val],
        y_val=y[:n_val],
        x_test=x_test,
        y_test=y_test,
        cluster=cluster,
    )
