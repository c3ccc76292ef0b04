"""Memorisation check: copies are caught, independent samples are not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import cdist

from medgen.metrics.memorisation import (
    memorisation_report,
    nearest_neighbours,
    save_nearest_pairs_figure,
    voxel_vectors,
)

D = 64


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


@pytest.fixture()
def gaussian_sets():
    rng = np.random.default_rng(0)
    return rng, rng.standard_normal((40, D)), rng.standard_normal((20, D))


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(1)
    q, r = rng.standard_normal((7, 5)), rng.standard_normal((9, 5))
    d, i = nearest_neighbours(q, r)
    full = cdist(q, r)
    np.testing.assert_array_equal(i, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-10)
    d_self, i_self = nearest_neighbours(r, r, exclude_self=True)
    full = cdist(r, r) + np.diag(np.full(9, np.inf))
    np.testing.assert_array_equal(i_self, full.argmin(1))
    np.testing.assert_allclose(d_self, full.min(1), rtol=1e-10)


def test_copying_generator_is_flagged(gaussian_sets):
    rng, train, heldout = gaussian_sets
    source = rng.choice(40, size=15, replace=False)
    fake = train[source] + 0.01 * rng.standard_normal((15, D))
    rep = memorisation_report(
        fake, train, heldout, fake_ids=ids("fake", 15), train_ids=ids("train", 40), heldout_ids=ids("held", 20)
    )
    assert rep["ratio"] < 0.01
    assert rep["n_likely_copy"] == 15 and all(rep["likely_copy"])
    assert rep["spaces"]["feature"]["nearest_train_index"] == list(source)
    # closest pairs are true copies, sorted by distance, with the right ids
    for p in rep["closest_pairs"]:
        assert p["train_id"] == f"train{source[p['fake_index']]:03d}"
        assert p["distance"] == pytest.approx(np.linalg.norm(fake[p["fake_index"]] - train[source[p["fake_index"]]]))
    dists = [p["distance"] for p in rep["closest_pairs"]]
    assert len(dists) == 5 and dists == sorted(dists)
    # reference: the held-out nearest distances, independently computed
    held_nn = cdist(heldout, train).min(1)
    assert rep["median_reference_to_train"] == pytest.approx(np.median(held_nn))
    assert rep["spaces"]["feature"]["threshold"] == pytest.approx(0.5 * np.quantile(held_nn, 0.05))


def test_independent_samples_are_not_flagged(gaussian_sets):
    rng, train, heldout = gaussian_sets
    fake = rng.standard_normal((30, D))
    rep = memorisation_report(fake, train, heldout, fake_ids=ids("f", 30), train_ids=ids("t", 40))
    assert 0.85 < rep["ratio"] < 1.15
    assert rep["n_likely_copy"] == 0 and rep["likely_copy_ids"] == []
    fake_nn = cdist(fake, train).min(1)
    assert rep["median_fake_to_train"] == pytest.approx(np.median(fake_nn))


def test_mixed_set_flags_exactly_the_copies_and_falls_back_to_leave_one_out(gaussian_sets):
    rng, train, _ = gaussian_sets
    fake = rng.standard_normal((10, D))
    fake[[2, 7]] = train[[5, 11]] + 0.02 * rng.standard_normal((2, D))
    rep = memorisation_report(fake, train, None, fake_ids=ids("f", 10), train_ids=ids("t", 40))
    assert rep["reference"] == "train_leave_one_out"
    loo = (cdist(train, train) + np.diag(np.full(40, np.inf))).min(1)
    assert rep["median_reference_to_train"] == pytest.approx(np.median(loo))
    assert rep["likely_copy_ids"] == ["f002", "f007"]
    assert [(p["fake_id"], p["train_id"]) for p in rep["closest_pairs"][:2]] in (
        [("f002", "t005"), ("f007", "t011")],
        [("f007", "t011"), ("f002", "t005")],
    )


def smooth_volumes(rng, n: int, size: int = 16) -> np.ndarray:
    v = gaussian_filter(rng.standard_normal((n, size, size, size)), (0, 1.5, 1.5, 1.5))
    return np.clip(v / (3 * v.std()), -1, 1).astype(np.float32)


def test_voxel_space_rmse_and_copy_detection():
    rng = np.random.default_rng(2)
    train, held, indep = smooth_volumes(rng, 12), smooth_volumes(rng, 6), smooth_volumes(rng, 3)
    fake = np.concatenate([train[[4, 9]] + 0.02 * rng.standard_normal((2, 16, 16, 16)), indep]).astype(np.float32)
    rep = memorisation_report(
        None, None, fake_ids=ids("f", 5), train_ids=ids("t", 12), heldout_ids=ids("h", 6),
        fake_vox=list(fake), train_vox=train, heldout_vox=held, vox_size=None,
    )
    vox = rep["spaces"]["voxel"]
    assert "feature" not in rep["spaces"] and rep["ratio"] == vox["ratio"]
    rmse = np.sqrt(((fake[:, None] - train[None]) ** 2).mean(axis=(2, 3, 4)))  # [5, 12]
    np.testing.assert_allclose(vox["fake_to_train"], rmse.min(1), rtol=1e-5)
    assert vox["nearest_train_index"][:2] == [4, 9]
    assert rep["likely_copy"] == [True, True, False, False, False]


def test_voxel_downsampling_is_block_average():
    rng = np.random.default_rng(3)
    vols = rng.uniform(-1, 1, (2, 16, 16, 16)).astype(np.float32)
    rows = voxel_vectors(vols, vox_size=8)
    blocks = vols.reshape(2, 8, 2, 8, 2, 8, 2).mean(axis=(2, 4, 6)).reshape(2, -1)
    np.testing.assert_allclose(rows, blocks, atol=1e-6)


def test_feature_and_voxel_flags_are_combined():
    rng = np.random.default_rng(4)
    train_f, held_f = rng.standard_normal((12, D)), rng.standard_normal((6, D))
    train_v, held_v = smooth_volumes(rng, 12), smooth_volumes(rng, 6)
    # fake 0 copies training volume 3 in voxel space only; fake 1 in feature space only
    fake_f = np.stack([rng.standard_normal(D), train_f[8] + 0.01 * rng.standard_normal(D), rng.standard_normal(D)])
    fake_v = np.stack([train_v[3], smooth_volumes(rng, 1)[0], smooth_volumes(rng, 1)[0]])
    rep = memorisation_report(
        fake_f, train_f, held_f, fake_ids=["a", "b", "c"], train_ids=ids("t", 12),
        fake_vox=fake_v, train_vox=train_v, heldout_vox=held_v,
    )
    assert rep["spaces"]["feature"]["likely_copy"] == [False, True, False]
    assert rep["spaces"]["voxel"]["likely_copy"] == [True, False, False]
    assert rep["likely_copy_ids"] == ["a", "b"]


def test_rejects_mismatched_ids(gaussian_sets):
    _, train, heldout = gaussian_sets
    with pytest.raises(ValueError, match="ids"):
        memorisation_report(train[:3], train, heldout, fake_ids=["x"], train_ids=ids("t", 40))


def test_nearest_pairs_figure_shows_each_pair_above_its_match(tmp_path):
    import matplotlib.image

    from medgen.viz.mosaic import mosaic_array

    rng = np.random.default_rng(5)
    fakes, trains = smooth_volumes(rng, 2), smooth_volumes(rng, 3)
    pairs = [
        {"fake_index": 1, "train_index": 2, "fake_id": "f1", "train_id": "t2", "distance": 0.1},
        {"fake_index": 0, "train_index": 0, "fake_id": "f0", "train_id": "t0", "distance": 0.2},
    ]
    path = tmp_path / "pairs.png"
    save_nearest_pairs_figure(pairs, fakes, trains, path)
    img = matplotlib.image.imread(path)
    expected = mosaic_array([fakes[1], trains[2], fakes[0], trains[0]], vmin=-1, vmax=1)
    scale = img.shape[0] // expected.shape[0]
    assert img.shape[:2] == (expected.shape[0] * scale, expected.shape[1] * scale)
    # away from the labels (top-left corners), the pixels are the mosaic of the pairs
    grey = img[..., 0] if img.ndim == 3 else img
    bottom = slice(img.shape[0] - 8 * scale, img.shape[0])
    np.testing.assert_allclose(grey[bottom], np.kron(expected, np.ones((scale, scale)))[bottom], atol=3 / 255)  # 8-bit colour map
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.png"]
