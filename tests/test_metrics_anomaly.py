"""Anomaly-detection metrics (best Dice over thresholds, the threshold at a false-positive
rate, per-lesion detection by size) against independent reference computations."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from medgen.metrics import lesions, scores
from medgen.metrics.registry import METRICS


def dice_by_brute_force(maps: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """Dice at every distinct score as threshold (``>=``), the best one and, among equals, the highest threshold."""
    s, y = np.asarray(maps, dtype=np.float64).ravel(), np.asarray(masks).ravel().astype(bool)
    best, best_t = -1.0, math.nan
    for t in np.unique(s):
        pred = s >= t
        tp, fp, fn = np.sum(pred & y), np.sum(pred & ~y), np.sum(~pred & y)
        dice = 2 * tp / (2 * tp + fp + fn)
        if dice >= best:
            best, best_t = dice, t
    return float(best), float(best_t)


def random_maps(seed: int, shape=(3, 6, 5, 4), levels: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Small maps with many ties (scores rounded to a few levels) and masks they partly find."""
    rng = np.random.default_rng(seed)
    masks = rng.random(shape) < 0.2
    maps = np.round((masks * 0.6 + rng.random(shape)) * levels / 1.6) / levels
    return maps.astype(np.float32), masks


# ---------------------------------------------------------------------------- best Dice


@pytest.mark.parametrize("seed", range(6))
def test_best_dice_against_every_threshold(seed):
    maps, masks = random_maps(seed)
    assert len(np.unique(maps)) < maps.size // 5  # many ties
    got = scores.best_dice(maps, masks)
    dice, threshold = dice_by_brute_force(maps, masks)
    assert got.dice == pytest.approx(dice, abs=1e-12)
    assert got.threshold == threshold
    assert isinstance(got.dice, float) and isinstance(got.threshold, float)
    d, t = got  # a pair
    assert (d, t) == (got.dice, got.threshold)


def test_best_dice_without_ties_and_across_sweep_blocks(monkeypatch):
    rng = np.random.default_rng(11)
    masks = rng.random((2, 9, 8, 7)) < 0.15
    maps = masks * 0.7 + rng.normal(0, 0.5, masks.shape)  # float64, distinct scores
    reference = dice_by_brute_force(maps, masks)
    assert scores.best_dice(maps, masks) == pytest.approx(reference, abs=1e-12)
    monkeypatch.setattr(scores, "_SWEEP_BLOCK", 3)  # runs of ties and the best split over many blocks
    assert scores.best_dice(maps, masks) == pytest.approx(reference, abs=1e-12)
    tied, tied_masks = random_maps(3, shape=(4, 7, 6, 5), levels=5)
    assert scores.best_dice(tied, tied_masks) == pytest.approx(dice_by_brute_force(tied, tied_masks), abs=1e-12)


def test_best_dice_is_the_best_f1_of_scikit_learns_precision_recall_curve():
    rng = np.random.default_rng(5)
    masks = np.zeros((4, 12, 12, 12), bool)
    masks[:, 3:7, 4:9, 2:6] = True
    maps = (masks * 1.0 + rng.normal(0, 0.8, masks.shape)).astype(np.float32)
    precision, recall, thresholds = precision_recall_curve(masks.ravel(), maps.ravel())
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-300)
    got = scores.best_dice(maps, masks)
    assert got.dice == pytest.approx(f1.max(), abs=1e-12)
    assert got.threshold == float(thresholds[np.argmax(f1)])


def test_best_dice_of_a_perfect_and_of_a_constant_map():
    masks = np.zeros((2, 8, 8, 8), bool)
    masks[0, 2:5, 3:6, 1:4] = True
    masks[1, 6:8, 0:3, 5:7] = True
    assert scores.best_dice(masks.astype(np.float32), masks) == (1.0, 1.0)
    rng = np.random.default_rng(1)
    separable = np.where(masks, rng.uniform(0.5, 1.0, masks.shape), rng.uniform(0.0, 0.5, masks.shape))
    got = scores.best_dice(separable, masks)
    assert got.dice == 1.0 and got.threshold == separable[masks].min()
    # A constant map: the only threshold predicts everything, Dice 2P / (N + P).
    n, p = masks.size, int(masks.sum())
    assert scores.best_dice(np.full(masks.shape, 0.3), masks) == pytest.approx((2 * p / (n + p), 0.3), abs=1e-12)
    # The whole volume abnormal: everything predicted is right.
    assert scores.best_dice(np.zeros((2, 3)), np.ones((2, 3), int)).dice == 1.0


def test_best_dice_of_lists_pools_the_voxels():
    maps, masks = random_maps(2, shape=(2, 5, 6, 4))
    other, other_masks = random_maps(9, shape=(1, 3, 7, 2))
    pooled = scores.best_dice(np.concatenate([maps.ravel(), other.ravel()]), np.concatenate([masks.ravel(), other_masks.ravel()]))
    assert scores.best_dice([maps[0], maps[1], other[0]], [masks[0], masks[1].astype(np.uint8), other_masks[0]]) == pooled
    assert METRICS["best_dice"].kind == "scores"
    assert METRICS["best_dice"].fn(maps, masks) == scores.best_dice(maps, masks).dice


def test_best_dice_problems():
    maps, masks = random_maps(0)
    with pytest.raises(ValueError, match=r"shape \(3, 6, 5, 4\) but the masks \(3, 6, 5\)"):
        scores.best_dice(maps, masks[..., 0])
    with pytest.raises(ValueError, match="anomaly map 1 has shape"):
        scores.best_dice(list(maps), [masks[0], masks[1, :3], masks[2]])
    with pytest.raises(ValueError, match="3 anomaly maps but 2 masks"):
        scores.best_dice(list(maps), list(masks[:2]))
    with pytest.raises(ValueError, match="binary"):
        scores.best_dice(maps, masks * 2)
    with pytest.raises(ValueError, match="no positive voxel"):
        scores.best_dice(maps, np.zeros_like(masks))
    bad = maps.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        scores.best_dice(bad, masks)


def test_best_dice_on_32_volumes_of_64_cubed_keeps_float32_and_memory_small():
    rng = np.random.default_rng(0)
    masks = np.zeros((32, 64, 64, 64), bool)
    masks[:, 20:30, 20:32, 10:25] = True
    maps = masks.astype(np.float32)
    maps += rng.standard_normal(masks.shape, dtype=np.float32) * np.float32(0.7)
    tracemalloc.start()
    got = scores.best_dice(maps, masks)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * maps.nbytes  # one sorted float32 copy and small temporaries, no float64 copy
    # Spot check on the voxels near the threshold: counts of the thresholded maps.
    pred = maps >= got.threshold
    tp = np.count_nonzero(pred & masks)
    assert got.dice == pytest.approx(2 * tp / (np.count_nonzero(pred) + np.count_nonzero(masks)), abs=1e-12)
    below = maps[maps < got.threshold].max()
    pred = maps >= below
    tp = np.count_nonzero(pred & masks)
    assert 2 * tp / (np.count_nonzero(pred) + np.count_nonzero(masks)) <= got.dice


# ---------------------------------------------------------------------------- threshold at a false-positive rate


def threshold_by_brute_force(normal: np.ndarray, fpr: float) -> float:
    """The lowest candidate (a distinct normal score, or just above the highest) flagging at most fpr."""
    s = np.asarray(normal).ravel()
    top = np.nextafter(s.max(), np.array(np.inf, dtype=s.dtype))
    for t in [*np.unique(s), top]:
        if np.mean(s >= t) <= fpr + 1e-12:
            return float(t)
    raise AssertionError("unreachable")


def test_threshold_at_fpr_is_the_score_after_the_quantile():
    rng = np.random.default_rng(3)
    normal = rng.normal(size=1000)  # distinct scores
    ordered = np.sort(normal)
    for fpr in (0.001, 0.01, 0.05, 0.29, 0.5, 0.75, 0.9):
        t = scores.threshold_at_fpr(normal, fpr)
        # The (1 - fpr) quantile is the highest score left below; the threshold is the next score.
        q = np.quantile(normal, 1 - fpr, method="inverted_cdf")
        assert t == ordered[np.searchsorted(ordered, q, side="right")]
        assert np.count_nonzero(normal >= t) == round(fpr * 1000)
        assert t == threshold_by_brute_force(normal, fpr)
    # Below 1 / N nothing may be flagged: just above the highest score.
    assert scores.threshold_at_fpr(normal, 0.0005) == np.nextafter(ordered[-1], np.inf) == threshold_by_brute_force(normal, 0.0005)


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.07, 0.1, 0.25, 0.3, 0.5, 0.9, 1.0])
def test_threshold_at_fpr_with_ties_against_every_threshold(fpr):
    rng = np.random.default_rng(7)
    maps = np.round(rng.random((4, 5, 5, 4)) * 12).astype(np.float32) / 12  # many ties
    t = scores.threshold_at_fpr(maps, fpr)
    assert t == threshold_by_brute_force(maps, fpr)
    assert np.mean(maps >= t) <= fpr
    lower = maps[maps < t]
    if lower.size:  # any lower score as threshold flags too many
        assert np.mean(maps >= lower.max()) > fpr
    assert scores.threshold_at_fpr(list(maps), fpr) == t  # a list of maps pools the same way


def test_threshold_at_fpr_edges():
    normal = np.array([0.2, 0.4, 0.4, 0.9], dtype=np.float32)
    assert scores.threshold_at_fpr(normal, 1.0) == pytest.approx(0.2)
    top = scores.threshold_at_fpr(normal, 0.0)
    assert top > 0.9 and np.float32(top) > normal.max() and not np.any(normal >= top)
    assert np.float32(top) == np.nextafter(np.float32(0.9), np.float32(1))
    assert scores.threshold_at_fpr(normal, 0.2) == top  # 0.8 normal scores may be flagged: none
    assert scores.threshold_at_fpr(normal, 0.25) == pytest.approx(0.9)  # one may be flagged
    assert scores.threshold_at_fpr(normal, 0.5) == pytest.approx(0.9)  # two, but the tied 0.4 are three
    assert scores.threshold_at_fpr(normal, 0.75) == pytest.approx(0.4)
    assert scores.threshold_at_fpr([3, 1, 2], 1 / 3) == 3.0  # integers, one score per volume
    with pytest.raises(ValueError, match=r"rate in \[0, 1\]"):
        scores.threshold_at_fpr(normal, 1.5)
    with pytest.raises(ValueError, match="no normal scores"):
        scores.threshold_at_fpr([], 0.1)
    with pytest.raises(ValueError, match="finite"):
        scores.threshold_at_fpr([0.1, np.inf], 0.1)


# ---------------------------------------------------------------------------- lesions


@pytest.fixture()
def lesion_case():
    """Two volumes with cubic lesions of known sizes and known map maxima inside each."""
    lab = np.zeros((2, 30, 30, 30), np.int16)
    maps = np.zeros(lab.shape, np.float32)
    lab[0, 1:3, 1:3, 1:3] = 1  # 8 voxels
    lab[0, 10:20, 10:20, 10:20] = 2  # 1000 voxels
    lab[0, 25:28, 2:5, 2:5] = 4  # 27 voxels (label 3 absent)
    lab[1, 5:9, 5:9, 5:9] = 1  # 64 voxels
    maps[0, 2, 2, 2] = 0.9  # maximum of lesion 1
    maps[0, 12, 15, 11] = 0.4  # lesion 2
    maps[0, 26, 3, 4] = 0.5  # lesion 4
    maps[1, 6, 7, 8] = 0.49  # lesion 1 of volume 1
    maps[1, 20:, 20:, 20:] = 5.0  # high scores outside every lesion do not count
    return maps, lab


def test_lesion_detection_records_and_size_bins(lesion_case):
    maps, lab = lesion_case
    det = lesions.lesion_detection(maps, lab, threshold=0.5, spacing=(1.0, 1.0, 2.0))
    got = [(r.volume, r.lesion, r.voxels, r.max_score, r.detected) for r in det.records]
    assert got == [(0, 1, 8, pytest.approx(0.9), True), (0, 2, 1000, pytest.approx(0.4), False),
                   (0, 4, 27, 0.5, True), (1, 1, 64, pytest.approx(0.49), False)]
    voxel_mm3 = 2.0
    for r in det.records:
        assert r.diameter_mm == pytest.approx((6 * r.voxels * voxel_mm3 / math.pi) ** (1 / 3), rel=1e-12)
    # Diameters: 3.1, 15.6, 4.7, 6.2 mm
    assert [b["bin"] for b in det.by_size] == ["<10 mm", "10-20 mm", ">=20 mm"]
    assert [(b["n"], b["detected"]) for b in det.by_size] == [(3, 2), (1, 0), (0, 0)]
    assert det.by_size[0]["rate"] == pytest.approx(2 / 3) and det.by_size[1]["rate"] == 0.0
    assert det.by_size[2]["rate"] is None
    assert (det.n_lesions, det.n_detected, det.rate) == (4, 2, 0.5)
    report = det.as_dict()
    assert report["lesions"][2] == {"volume": 0, "lesion": 4, "voxels": 27, "diameter_mm": det.records[2].diameter_mm,
                                    "max_score": 0.5, "detected": True}
    assert report["rate"] == 0.5 and report["threshold"] == 0.5 and len(report["by_size"]) == 3


def test_lesion_detection_thresholds_spacing_and_bins(lesion_case):
    maps, lab = lesion_case
    assert [r.detected for r in lesions.lesion_detection(maps, lab, 0.4).records] == [True, True, True, True]
    assert [r.detected for r in lesions.lesion_detection(maps, lab, 0.95).records] == [False] * 4
    # Spacing per volume; edges in mm as given, 0 and infinity added.
    det = lesions.lesion_detection(list(maps), list(lab), 0.45, spacing=[(1, 1, 1), (3, 3, 3)], bins=(5, 12))
    d = {(r.volume, r.lesion): r.diameter_mm for r in det.records}
    assert d[(1, 1)] == pytest.approx(lesions.equivalent_diameter(64 * 27), rel=1e-12)
    assert d[(0, 2)] == pytest.approx((6000 / math.pi) ** (1 / 3), rel=1e-12)  # 12.4 mm
    assert [(b["bin"], b["n"], b["detected"]) for b in det.by_size] == [("<5 mm", 2, 2), ("5-12 mm", 0, 0), (">=12 mm", 2, 1)]
    assert lesions.detection_by_size(det.records, (0, 5, 12, math.inf)) == det.by_size
    # A lone 3D volume; a volume without lesions gives no records.
    one = lesions.lesion_detection(maps[1], lab[1], 0.45, spacing=2.0)
    assert [(r.volume, r.lesion, r.voxels) for r in one.records] == [(0, 1, 64)]
    assert one.records[0].diameter_mm == pytest.approx(lesions.equivalent_diameter(64, (2, 2, 2)))
    empty = lesions.lesion_detection(maps[1], np.zeros_like(lab[1]), 0.45)
    assert empty.records == [] and empty.rate is None and all(b["n"] == 0 for b in empty.by_size)


def test_lesion_maxima_against_a_loop_over_labels():
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 6, (9, 8, 7))
    maps = rng.normal(size=lab.shape)
    ids, counts, maxima = lesions.lesion_maxima(maps, lab)
    assert ids.tolist() == [1, 2, 3, 4, 5]
    assert counts.tolist() == [int(np.sum(lab == k)) for k in ids]
    assert maxima.tolist() == [maps[lab == k].max() for k in ids]


def test_lesion_detection_problems(lesion_case):
    maps, lab = lesion_case
    with pytest.raises(ValueError, match="anomaly map 1 has shape"):
        lesions.lesion_detection([maps[0], maps[1, :20]], list(lab), 0.5)
    with pytest.raises(ValueError, match="2 anomaly maps but 1 lesion maps"):
        lesions.lesion_detection(maps, lab[:1], 0.5)
    with pytest.raises(ValueError, match="integers"):
        lesions.lesion_detection(maps, lab + 0.5, 0.5)
    with pytest.raises(ValueError, match="0 \\(background\\) or positive"):
        lesions.lesion_detection(maps, -lab, 0.5)
    with pytest.raises(ValueError, match="spacing"):
        lesions.lesion_detection(maps, lab, 0.5, spacing=(1, 1))
    with pytest.raises(ValueError, match="spacing"):
        lesions.lesion_detection(maps, lab, 0.5, spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="increasing edges"):
        lesions.lesion_detection(maps, lab, 0.5, bins=(20, 10))
    with pytest.raises(ValueError, match="3D volumes"):
        lesions.lesion_detection(maps[:, 0, 0], lab[:, 0, 0], 0.5)
    with pytest.raises(ValueError, match="threshold"):
        lesions.lesion_detection(maps, lab, math.nan)
    bad = maps.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        lesions.lesion_detection(bad, lab, 0.5)
    # Float labels with whole values are labels.
    assert lesions.lesion_detection(maps, lab.astype(np.float32), 0.5).n_lesions == 4


# ---------------------------------------------------------------------------- AUROC, AUPRC


@pytest.mark.parametrize("seed, levels", [(4, 7), (5, 3), (6, 1000), (7, 2)])
def test_voxel_auroc_and_auprc_are_scikit_learns_on_pooled_maps(seed, levels):
    maps, masks = random_maps(seed, shape=(3, 7, 6, 5), levels=levels)  # ties between and across the classes
    y, s = masks.ravel(), maps.ravel()
    assert scores.voxel_auroc(list(maps), list(masks)) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert scores.voxel_auprc(maps, masks) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert scores.voxel_auprc(list(maps), list(masks)) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    # a perfect map, its reverse, a constant one
    perfect = masks.astype(np.float32)
    assert scores.voxel_auroc(perfect, masks) == 1.0 and scores.voxel_auprc(perfect, masks) == 1.0
    assert scores.voxel_auroc(-perfect, masks) == 0.0
    assert scores.voxel_auroc(np.zeros_like(perfect), masks) == 0.5
    assert scores.voxel_auprc(np.zeros_like(perfect), masks) == pytest.approx(masks.mean())
    with pytest.raises(ValueError, match="both positive and negative"):
        scores.voxel_auroc(maps, np.zeros_like(masks))
    assert scores.auroc(-s, y) == pytest.approx(1 - roc_auc_score(y, s), abs=1e-12)
