"""Paired metrics (PSNR, SSIM, NMSE) and score metrics (AUROC, AUPRC) against independent
reference computations."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from medgen.core.errors import InputError, UsageError
from medgen.metrics import paired, scores
from medgen.metrics.evaluate import evaluate_paired, evaluate_scores
from medgen.metrics.registry import METRICS


def smooth_volume(rng: np.random.Generator, n: int = 20) -> np.ndarray:
    """A structured volume in [-1, 1] (smoothed noise), so SSIM is not trivially near 0."""
    v = gaussian_filter(rng.normal(size=(n, n, n)), 2.0)
    return np.clip(v / np.abs(v).max(), -1, 1)


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    targets = np.stack([smooth_volume(rng) for _ in range(4)])
    outputs = np.clip(targets + rng.normal(0, [[[[0.02]]], [[[0.05]]], [[[0.1]]], [[[0.2]]]], targets.shape), -1, 1)
    return outputs, targets


# ---------------------------------------------------------------------------- paired


def test_psnr_is_the_closed_form(pairs):
    outputs, targets = pairs
    for out, tgt in zip(outputs, targets):
        mse = np.mean((out - tgt) ** 2)
        assert paired.psnr(out, tgt, data_range=2.0) == pytest.approx(10 * math.log10(2.0**2 / mse), rel=1e-12)
        # A range of 1 is 20 log10(2) dB lower for the same error.
        assert paired.psnr(out, tgt, data_range=1.0) == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-12)
    assert paired.psnr(targets[0], targets[0]) == math.inf


def test_psnr_and_nmse_inside_a_mask(pairs):
    out, tgt = pairs[0][3].copy(), pairs[1][3]
    mask = np.zeros(out.shape, bool)
    mask[5:15, 4:12, 6:16] = True
    out[~mask] = -tgt[~mask]  # large errors outside the mask must not count
    mse = np.mean((out[mask] - tgt[mask]) ** 2)
    assert paired.psnr(out, tgt, mask) == pytest.approx(10 * math.log10(4.0 / mse), rel=1e-12)
    assert paired.nmse(out, tgt, mask) == pytest.approx(np.sum((out[mask] - tgt[mask]) ** 2) / np.sum(tgt[mask] ** 2), rel=1e-12)
    assert paired.psnr(out, tgt) < paired.psnr(out, tgt, mask) - 5
    with pytest.raises(ValueError, match="no voxel"):
        paired.psnr(out, tgt, np.zeros(out.shape, bool))


def test_nmse_identities(pairs):
    outputs, targets = pairs
    t = targets[1]
    assert paired.nmse(t, t) == 0.0
    assert paired.nmse(np.zeros_like(t), t) == pytest.approx(1.0, rel=1e-12)
    assert paired.nmse(2 * t, t) == pytest.approx(1.0, rel=1e-12)  # ||2t - t||² = ||t||²
    assert paired.nmse(outputs[2], t) == pytest.approx(np.sum((outputs[2] - t) ** 2) / np.sum(t * t), rel=1e-12)
    with pytest.raises(ValueError, match="all-zero target"):
        paired.nmse(t, np.zeros_like(t))


def test_ssim_matches_scikit_image(pairs):
    outputs, targets = pairs
    for out, tgt in zip(outputs, targets):
        ref = structural_similarity(out, tgt, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, win_size=11)
        assert paired.ssim(out, tgt, data_range=2.0) == pytest.approx(ref, abs=2e-6)
    assert paired.ssim(targets[0], targets[0]) == pytest.approx(1.0, abs=1e-6)
    # Noisier outputs are less similar.
    values = [paired.ssim(o, t) for o, t in zip(outputs, targets)]
    assert values == sorted(values, reverse=True) and values[-1] < 0.9


def test_ssim_inside_a_mask_averages_the_ssim_map(pairs):
    out, tgt = pairs[0][3], pairs[1][3]
    _, full = structural_similarity(out, tgt, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, win_size=11, full=True)
    mask = np.zeros(out.shape, bool)
    mask[3:12, 6:17, 5:9] = True  # partly outside the interior region (5 voxels from each side)
    inner = np.zeros(out.shape, bool)
    inner[5:-5, 5:-5, 5:-5] = True
    assert paired.ssim(out, tgt, mask) == pytest.approx(full[mask & inner].mean(), abs=2e-6)
    with pytest.raises(ValueError, match="inside the volume"):
        border = np.zeros(out.shape, bool)
        border[:3] = True
        paired.ssim(out, tgt, border)


def test_evaluate_paired_rows_and_summary(pairs):
    outputs, targets = pairs
    ev = evaluate_paired(outputs, targets)
    assert [r["id"] for r in ev.rows] == ["0", "1", "2", "3"]
    for name, fn in (("psnr", paired.psnr), ("ssim", paired.ssim), ("nmse", paired.nmse)):
        per_volume = [fn(o, t) for o, t in zip(outputs, targets)]
        assert [r[name] for r in ev.rows] == pytest.approx(per_volume, rel=1e-12)
        m = ev.metrics[name]
        assert m["value"] == pytest.approx(np.mean(per_volume), rel=1e-12)
        assert m["std"] == pytest.approx(np.std(per_volume), rel=1e-9)  # population std over volumes
        assert m["n"] == 4 and m["settings"]["data_range"] == 2.0
    assert ev.metrics["psnr"]["value"] > 20 and ev.metrics["nmse"]["value"] < 0.5
    assert "psnr" in ev.table() and json.loads(json.dumps(ev.report))["kind"] == "paired"
    # Lists of volumes, one metric, masks.
    masks = np.ones(targets.shape, bool)
    masks[:, :, :, :10] = False
    only = evaluate_paired(list(outputs), list(targets), masks=masks, metrics="psnr")
    assert list(only.metrics) == ["psnr"] and only.report["masked"] is True
    assert only.rows[1]["psnr"] == pytest.approx(paired.psnr(outputs[1], targets[1], masks[1]), rel=1e-12)


def test_evaluate_paired_problems(pairs):
    outputs, targets = pairs
    same = evaluate_paired(targets[:2], targets[:2], metrics=["psnr", "ssim"])
    assert same.metrics["psnr"]["value"] is None  # infinite: null in JSON
    assert same.metrics["ssim"]["value"] == pytest.approx(1.0, abs=1e-6)
    small = evaluate_paired(targets[:, :8, :8, :8], outputs[:, :8, :8, :8])
    assert "11 voxels" in small.metrics["ssim"]["error"] and small.metrics["psnr"]["n"] == 4
    assert small.failed == ["ssim"] and all("ssim" not in r for r in small.rows)
    with pytest.raises(InputError, match="one target"):
        evaluate_paired(outputs[:3], targets)
    with pytest.raises(InputError, match="shape"):
        evaluate_paired(outputs[:, :10], targets)
    with pytest.raises(UsageError, match="unknown metric 'psnrr'"):
        evaluate_paired(outputs, targets, metrics="psnrr")
    with pytest.raises(UsageError, match="metric 'fid'"):
        evaluate_paired(outputs, targets, metrics="fid")


def test_evaluate_paired_reads_folders(pairs, tmp_path):
    outputs, targets = pairs
    for name, vols in (("out", outputs), ("tgt", targets)):
        (tmp_path / name).mkdir()
        for i, v in enumerate(vols):
            np.save(tmp_path / name / f"case{i}.npy", v.astype(np.float32))
    ev = evaluate_paired(tmp_path / "out", tmp_path / "tgt", metrics="psnr")
    assert [r["id"] for r in ev.rows] == ["case0", "case1", "case2", "case3"]
    expected = [paired.psnr(o.astype(np.float32), t.astype(np.float32)) for o, t in zip(outputs, targets)]
    assert [r["psnr"] for r in ev.rows] == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------- scores


def auroc_by_pairs(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def average_precision_by_hand(s: np.ndarray, y: np.ndarray) -> float:
    """Σ (R_k − R_{k−1}) P_k over the distinct thresholds, highest first (tied scores enter together)."""
    total, prev_recall, ap = y.sum(), 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        chosen = s >= t
        tp = float(y[chosen].sum())
        recall, precision = tp / total, tp / chosen.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_auroc_and_auprc_of_a_small_example_by_hand():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 1])
    # Pairs (positive above negative): 0.9 beats both, 0.7 beats 0.6, 0.5 none: 3 of 6.
    assert scores.auroc(s, y) == pytest.approx(3 / 6, abs=1e-12)
    # Precision at each positive: 1/1, 2/3, 3/5; each recall step is 1/3.
    assert scores.auprc(s, y) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)


def test_auroc_and_auprc_against_brute_force_with_ties():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    s = np.round(y * 0.8 + rng.normal(0, 1, 60), 1)  # rounded: many ties
    assert scores.auroc(s, y) == pytest.approx(auroc_by_pairs(s, y), abs=1e-12)
    assert scores.auprc(s, y) == pytest.approx(average_precision_by_hand(s, y), abs=1e-12)
    assert 0.6 < scores.auroc(s, y) < 1.0
    assert scores.auroc(-s, y) == pytest.approx(1 - auroc_by_pairs(s, y), abs=1e-12)


def test_evaluate_scores_per_volume_and_per_voxel():
    rng = np.random.default_rng(8)
    y = np.array([0, 1] * 10)
    s = y + rng.normal(0, 0.7, 20)
    ev = evaluate_scores(s, y)
    assert list(ev.metrics) == ["auroc", "auprc"] and ev.report["level"] == "volume"
    assert ev.metrics["auroc"]["value"] == pytest.approx(auroc_by_pairs(s, y), abs=1e-12)
    assert ev.metrics["auprc"]["value"] == pytest.approx(average_precision_by_hand(s, y), abs=1e-12)
    assert (ev.report["n_positive"], ev.report["n_negative"]) == (10, 10)

    masks = np.zeros((3, 8, 8, 8), bool)
    masks[0, 2:4, 2:5, 3:6] = True
    masks[2, 5:7, 1:3, 0:2] = True
    maps = masks + rng.normal(0, 0.6, masks.shape)
    vox = evaluate_scores(maps, masks)
    assert list(vox.metrics) == ["voxel_auroc", "voxel_auprc", "best_dice"] and vox.report["n"] == masks.size
    assert vox.metrics["voxel_auroc"]["value"] == pytest.approx(auroc_by_pairs(maps.ravel(), masks.ravel().astype(int)), abs=1e-12)
    assert vox.metrics["voxel_auprc"]["value"] == pytest.approx(
        average_precision_by_hand(maps.ravel(), masks.ravel().astype(int)), abs=1e-12)
    perfect = evaluate_scores([m.astype(float) for m in masks], list(masks))  # lists of maps pool the same way
    assert perfect.metrics["voxel_auroc"]["value"] == 1.0 and perfect.metrics["voxel_auprc"]["value"] == 1.0
    assert perfect.metrics["best_dice"]["value"] == 1.0
    # the best Dice of the noisy maps: the best over every distinct threshold, by hand
    flat, truth = maps.ravel(), masks.ravel()
    by_hand = max(2 * (truth & (flat >= t)).sum() / ((flat >= t).sum() + truth.sum()) for t in np.unique(flat))
    assert vox.metrics["best_dice"]["value"] == pytest.approx(by_hand, abs=1e-12)


def test_evaluate_scores_problems():
    one_class = evaluate_scores([0.1, 0.5, 0.9], [1, 1, 1])
    assert "both positive and negative" in one_class.metrics["auroc"]["error"]
    with pytest.raises(UsageError, match="does not fit one score per volume"):
        evaluate_scores([0.1, 0.9], [0, 1], metrics="voxel_auroc")
    with pytest.raises(InputError, match="3 score values but 2 label"):
        evaluate_scores([0.1, 0.5, 0.9], [0, 1])
    bad = evaluate_scores([0.1, 0.5, 0.9], [0, 2, 1])
    assert "binary" in bad.metrics["auroc"]["error"]


def test_registry_kinds():
    kinds = {name: METRICS[name].kind for name in ("psnr", "ssim", "nmse", "auroc", "auprc", "voxel_auroc", "voxel_auprc", "fid")}
    assert kinds == {"psnr": "paired", "ssim": "paired", "nmse": "paired", "auroc": "scores", "auprc": "scores",
                     "voxel_auroc": "scores", "voxel_auprc": "scores", "fid": "features"}
