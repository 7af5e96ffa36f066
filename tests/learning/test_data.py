"""The clustered digits split: deterministic, the documented rule, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mycelium.learning.data import (
    SCENARIOS,
    load_npz,
    make_federation,
    make_partition,
    own_test_split,
)


def part(scenario: str = "rotate", index: int = 0, **kw: object):
    args = {"scenario": scenario, "clusters": 4, "num_clients": 24, "seed": 0} | kw
    return make_partition(index=index, **args)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_partition_is_deterministic_and_matches_the_federation(scenario: str) -> None:
    fed = make_federation(scenario=scenario, clusters=4, num_clients=24, seed=3)
    alone = make_partition(scenario=scenario, clusters=4, index=9, num_clients=24, seed=3)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(fed[9], name), getattr(alone, name))
    c = fed[9]
    assert c.x_train.dtype == np.float32 and c.y_train.dtype == np.int64
    assert c.x_train.shape[1] == 64 and 0.0 <= c.x_train.min() and c.x_train.max() <= 1.0
    assert len(c.y_val) > 0 and len(c.y_test) > 0


def test_cluster_is_index_mod_k_unless_given() -> None:
    assert [part(index=i).cluster for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert part(index=5, cluster=3).cluster == 3
    assert part("mixed", index=5).cluster is None


def test_rotate_cluster_sees_the_same_images_rotated() -> None:
    base, turned = part(index=0), part(index=1)  # same rank 0, clusters 0 and 1
    rotated = np.rot90(base.x_train.reshape(-1, 8, 8), k=1, axes=(1, 2)).reshape(-1, 64)
    np.testing.assert_array_equal(turned.x_train, rotated)
    np.testing.assert_array_equal(turned.y_train, base.y_train)


def test_permute_cluster_relabels_with_one_fixed_permutation() -> None:
    base, other = part("permute", index=0), part("permute", index=2)
    np.testing.assert_array_equal(base.x_train, other.x_train)
    mapping = dict(zip(base.y_train.tolist(), other.y_train.tolist(), strict=True))
    assert sorted(mapping) == list(range(10)) and sorted(mapping.values()) == list(range(10))
    assert any(k != v for k, v in mapping.items())


def test_shards_are_disjoint_within_a_cluster() -> None:
    fed = make_federation(scenario="rotate", clusters=4, num_clients=24, seed=0)
    rows = [tuple(map(tuple, np.vstack([c.x_train, c.x_val]))) for c in fed if c.cluster == 0]
    assert len(rows) == 6
    seen = [set(r) for r in rows]
    for i in range(6):
        for j in range(i + 1, 6):
            assert len(seen[i] & seen[j]) < 5  # only identical-looking digits may repeat


def test_thousands_of_clients_still_get_full_shards() -> None:
    last = make_partition(scenario="permute", clusters=4, index=999, num_clients=1000, seed=0)
    assert len(last.y_train) + len(last.y_val) == 120


def test_mixed_has_label_skew() -> None:
    fed = make_federation(scenario="mixed", clusters=4, num_clients=12, seed=0)
    top_share = [np.bincount(c.y_train, minlength=10).max() / len(c.y_train) for c in fed]
    assert np.mean(top_share) > 0.25  # uniform labels would give about 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "spiral"}, "unknown scenario"),
        ({"clusters": 0}, "clusters must be"),
        ({"index": 24}, "partition index"),
        ({"cluster": 4}, "cluster 4 outside"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict[str, object], message: str) -> None:
    args = {"scenario": "rotate", "clusters": 4, "index": 0, "num_clients": 24, "seed": 0}
    with pytest.raises(ValueError, match=message):
        make_partition(**(args | kwargs))


def test_load_npz_splits_a_users_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((50, 8, 8)), y=rng.integers(0, 10, 50))
    data = load_npz(path, seed=1)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (30, 10, 10)
    assert data.x_train.shape == (30, 64) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(load_npz(path, seed=1).y_val, data.y_val)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 64))}, "needs arrays 'x' and 'y'"),
        ({"x": np.zeros((10, 5)), "y": np.zeros(10, int)}, "x must have shape"),
        ({"x": np.zeros((10, 64)), "y": np.zeros(9, int)}, "integer labels"),
        ({"x": np.zeros((10, 64)), "y": np.full(10, 12)}, "labels must be in"),
        ({"x": np.full((10, 64), np.nan), "y": np.zeros(10, int)}, "NaN"),
        ({"x": np.zeros((10, 64)), "y": np.array([object()] * 10)}, "cannot read"),
    ],
)
def test_load_npz_rejects_bad_files(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(path, seed=0)


def test_load_npz_rejects_a_file_that_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        load_npz(path, seed=0)
    with pytest.raises(ValueError, match="cannot read"):
        load_npz(tmp_path / "missing.npz", seed=0)


@pytest.mark.parametrize("scenario", ["rotate", "permute"])
def test_label_skew_skews_labels_inside_each_cluster(scenario: str) -> None:
    fed = make_federation(scenario=scenario, clusters=2, num_clients=8, seed=0, label_skew=0.5)
    top_share = [np.bincount(c.y_train, minlength=10).max() / len(c.y_train) for c in fed]
    assert np.mean(top_share) > 0.25  # uniform labels would give about 0.1
    assert [c.cluster for c in fed] == [0, 1] * 4
    plain = make_federation(scenario=scenario, clusters=2, num_clients=8, seed=0)
    plain_top = [np.bincount(c.y_train, minlength=10).max() / len(c.y_train) for c in plain]
    assert np.mean(plain_top) < 0.2


@pytest.mark.parametrize(
    ("scenario", "skew"), [("rotate", 0.5), ("permute", 0.5), ("mixed", None), ("mixed", 2.0)]
)
def test_a_skewed_clients_test_split_follows_its_own_label_mix(
    scenario: str, skew: float | None
) -> None:
    for index in range(4):
        c = make_partition(
            scenario=scenario, clusters=2, index=index, num_clients=8, seed=1, label_skew=skew
        )
        own = np.bincount(np.concatenate([c.y_train, c.y_val]), minlength=10)
        test = np.bincount(c.y_test, minlength=10)
        assert len(c.y_test) == 359  # the whole digits test pool's size
        assert np.abs(test / test.sum() - own / own.sum()).max() <= 1 / len(c.y_test)
        if scenario == "mixed":
            continue
        # its cluster's view: every (image, label) is one of its cluster's test pool
        pool = make_partition(scenario=scenario, clusters=2, index=index % 2, num_clients=8, seed=1)
        pairs = {(r.tobytes(), int(y)) for r, y in zip(pool.x_test, pool.y_test, strict=True)}
        assert all((r.tobytes(), int(y)) in pairs for r, y in zip(c.x_test, c.y_test, strict=True))


def test_clients_without_skew_share_their_clusters_whole_test_pool() -> None:
    fed = make_federation(scenario="rotate", clusters=2, num_clients=6, seed=0)
    assert fed[0].x_test is fed[2].x_test and fed[1].x_test is fed[3].x_test
    assert len(fed[0].y_test) == 359
    np.testing.assert_array_equal(np.bincount(fed[0].y_test), np.bincount(fed[1].y_test))


def test_own_test_split_by_hand() -> None:
    y_test = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    rows = own_test_split(np.array([0, 0, 0, 1]), y_test, np.random.default_rng(0))
    assert len(rows) == 8
    assert np.bincount(y_test[rows], minlength=3).tolist() == [6, 2, 0]  # 3/4 and 1/4 of 8
    assert set(rows[y_test[rows] == 0]) == {0, 3, 6}  # label 0's three images, repeated
    # a label the pool lacks gives its share to the others
    rows = own_test_split(np.array([3, 3, 1]), y_test, np.random.default_rng(0))
    assert set(y_test[rows]) == {1} and len(rows) == 8


@pytest.mark.parametrize("skew", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_label_skew_is_refused(skew: float) -> None:
    with pytest.raises(ValueError, match="--label-skew must be a positive number"):
        part(label_skew=skew)


def test_digits_are_read_without_importing_scikit_learn() -> None:
    """The node reads the digits file scikit-learn ships (importing it costs ~60 MB)."""
    import subprocess
    import sys

    from mycelium.learning.data import _load_digits

    script = (
        "import sys; from mycelium.learning.data import _load_digits; _load_digits(); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    from sklearn.datasets import load_digits

    images, labels = _load_digits()
    digits = load_digits()
    assert np.array_equal(images, (digits.images / 16.0).astype(np.float32))
    assert np.array_equal(labels, digits.target)


def test_rotate_refuses_a_fifth_cluster_that_would_repeat_the_first() -> None:
    with pytest.raises(ValueError, match="4 distinct clusters"):
        part(clusters=5, num_clients=30)
    a, b = (
        part("permute", index=0, clusters=5, num_clients=30),
        part("permute", index=4, clusters=5, num_clients=30),
    )
    assert a.cluster == 0 and b.cluster == 4  # permute has as many clusters as asked
