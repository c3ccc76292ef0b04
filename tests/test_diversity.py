"""3D MS-SSIM diversity: checked against MONAI and scikit-image on the same volumes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.metrics.regression import compute_ms_ssim
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from medgen.metrics.diversity import (
    STANDARD_WEIGHTS,
    ms_ssim_3d,
    ms_ssim_diversity,
    ms_ssim_scales,
    sample_pairs,
)


def smooth_volume(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random blobby volume in about [-1, 1] (structure at several scales)."""
    v = gaussian_filter(rng.standard_normal((size, size, size)), 2.0)
    return np.clip(v / (3 * v.std()), -1, 1).astype(np.float32)


def test_identical_volumes_score_one():
    rng = np.random.default_rng(0)
    for size in (8, 16, 48):  # shrunken window, single scale, three scales
        a = smooth_volume(rng, size)
        assert ms_ssim_3d(a, a) == pytest.approx(1.0, abs=1e-5)


def test_matches_monai_multiscale_on_same_volumes():
    rng = np.random.default_rng(1)
    a = smooth_volume(rng, 48)
    b = (0.6 * a + 0.4 * smooth_volume(rng, 48)).astype(np.float32)
    k, sigma, weights = ms_ssim_scales(a.shape)
    assert (k, sigma, len(weights)) == (11, 1.5, 3)
    expected_w = np.array(STANDARD_WEIGHTS[:3]) / sum(STANDARD_WEIGHTS[:3])
    np.testing.assert_allclose(weights, expected_w)
    ref = compute_ms_ssim(
        torch.from_numpy(a)[None, None],
        torch.from_numpy(b)[None, None],
        spatial_dims=3,
        data_range=2.0,
        weights=tuple(expected_w),
    ).item()
    ours = ms_ssim_3d(a, b)
    assert 0.2 < ref < 0.99  # a non-trivial comparison
    assert ours == pytest.approx(ref, abs=2e-5)
    assert ms_ssim_3d(b, a) == pytest.approx(ours, abs=1e-6)  # symmetric


def test_single_scale_matches_skimage_ssim():
    rng = np.random.default_rng(2)
    a = smooth_volume(rng, 16)
    b = (0.5 * a + 0.5 * smooth_volume(rng, 16)).astype(np.float32)
    assert len(ms_ssim_scales(a.shape)[2]) == 1
    # Gaussian window sigma 1.5 truncated at radius 5 (= 11 voxels), population
    # covariances, border of 5 voxels dropped: the same definition as MONAI's.
    ref = structural_similarity(
        a.astype(np.float64), b.astype(np.float64), data_range=2.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )
    assert ms_ssim_3d(a, b) == pytest.approx(ref, abs=1e-4)


def test_scale_choice_rule():
    assert len(ms_ssim_scales((176, 176, 176))[2]) == 5
    assert len(ms_ssim_scales((175, 176, 176))[2]) == 4  # the shortest side decides
    assert len(ms_ssim_scales((128,) * 3)[2]) == 4
    assert len(ms_ssim_scales((21,) * 3)[2]) == 1
    assert len(ms_ssim_scales((22,) * 3)[2]) == 2
    k, sigma, w = ms_ssim_scales((8, 8, 8))
    assert (k, sigma, w) == (7, pytest.approx(1.5 * 7 / 11), (1.0,))
    for size in (16, 32, 64, 128, 256):
        k, _, w = ms_ssim_scales((size,) * 3)
        assert sum(w) == pytest.approx(1.0)
        assert size // 2 ** (len(w) - 1) >= k  # the coarsest scale holds one window


def test_diversity_is_mean_over_all_pairs_and_ranks_sets():
    rng = np.random.default_rng(3)
    base = smooth_volume(rng, 32)
    near_duplicates = [np.clip(base + 0.05 * smooth_volume(rng, 32), -1, 1) for _ in range(4)]
    independent = [smooth_volume(rng, 32) for _ in range(4)]

    res = ms_ssim_diversity(independent, max_pairs=50)
    pair_scores = [ms_ssim_3d(a, b) for a, b in itertools.combinations(independent, 2)]
    assert res["n_pairs"] == 6 and res["n_scales"] == 2
    assert res["mean"] == pytest.approx(np.mean(pair_scores), abs=1e-6)
    assert res["std"] == pytest.approx(np.std(pair_scores), abs=1e-6)

    dup = ms_ssim_diversity(near_duplicates)
    assert dup["mean"] > 0.9 > res["mean"] + 0.3


def test_random_pair_subset_is_distinct_and_reproducible():
    pairs = sample_pairs(30, 40, seed=5)
    assert len(pairs) == 40 == len(set(pairs))
    assert all(0 <= i < j < 30 for i, j in pairs)
    assert pairs == sample_pairs(30, 40, seed=5)
    assert sample_pairs(4, 40) == list(itertools.combinations(range(4), 2))

    rng = np.random.default_rng(6)
    vols = [smooth_volume(rng, 16) for _ in range(8)]
    res = ms_ssim_diversity(vols, max_pairs=5, seed=5)
    expected = np.mean([ms_ssim_3d(vols[i], vols[j]) for i, j in sample_pairs(8, 5, seed=5)])
    assert res["n_pairs"] == 5
    assert res["mean"] == pytest.approx(expected, abs=1e-6)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        ms_ssim_diversity([np.zeros((16, 16, 16)), np.zeros((16, 16, 20))])
