"""Score metrics: anomaly scores against binary labels (anomaly detection, classification).

Per volume: ``scores`` is one number per volume (higher = more anomalous) and ``labels``
is 1 for an abnormal volume, 0 for a normal one. Per voxel: ``scores`` are anomaly maps and
``labels`` the ground-truth masks of the same shapes; every voxel of every volume is one
sample (the maps and masks are flattened and pooled), as "pixel-level AUROC" in the
anomaly-detection literature.

* :func:`auroc` — area under the ROC curve (scikit-learn ``roc_auc_score``): the
  probability that a random positive scores above a random negative, ties counting half.
* :func:`auprc` — area under the precision-recall curve as average precision
  (scikit-learn ``average_precision_score``): Σ_k (R_k − R_{k−1}) P_k over the score
  thresholds, without interpolation. Its chance level is the share of positives.

Both need positives and negatives among the labels (ValueError otherwise). Their voxel forms,
:func:`voxel_auroc` and :func:`voxel_auprc`, give the same numbers from one sort of the pooled
float32 scores, so a test set of hundreds of millions of voxels fits in memory.

Thresholds of anomaly maps (a voxel is anomalous when its score reaches the threshold,
``score >= t``):

* :func:`best_dice` — the best Dice over all thresholds, voxels of all volumes pooled: the
  "⌈Dice⌉" upper bound of unsupervised anomaly segmentation (Baur et al. 2021). The
  threshold is chosen on the test masks themselves, so it is an upper bound of what a
  threshold fixed beforehand achieves. Exact: the scores are sorted once and every distinct
  score is tried (tied voxels are in or out together).
* :func:`threshold_at_fpr` — the lowest threshold whose false-positive rate on normal data
  is at most a given rate (e.g. the voxel threshold from the maps of normal volumes), to be
  fixed before looking at abnormal data.

Per-lesion detection at a threshold is in :mod:`medgen.metrics.lesions`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    raw = np.asarray(labels)
    if raw.size != s.size:
        raise ValueError(f"{s.size} scores but {raw.size} labels")
    if raw.dtype != bool and not np.all(np.isin(raw, (0, 1))):
        raise ValueError("labels must be binary: 0 (normal) or 1 (abnormal)")
    y = raw.reshape(-1).astype(bool)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"need both positive and negative labels, got {n_pos} positive of {y.size}")
    return s, y


def flatten_maps(maps: Any) -> np.ndarray:
    """Anomaly maps or masks, an array ``[n, ...]`` or a list of arrays of any shapes, as one flat array."""
    if isinstance(maps, np.ndarray):
        return maps.reshape(-1)
    return np.concatenate([np.asarray(m).reshape(-1) for m in maps]) if len(maps) else np.zeros(0)


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` against binary ``labels``."""
    from sklearn.metrics import roc_auc_score

    s, y = _check(scores, labels)
    return float(roc_auc_score(y, s))


def auprc(scores: Any, labels: Any) -> float:
    """Average precision of ``scores`` against binary ``labels`` (area under the PR curve)."""
    from sklearn.metrics import average_precision_score

    s, y = _check(scores, labels)
    return float(average_precision_score(y, s))


# Voxel level the samples are every voxel of every volume: 128 volumes of 128³ are 268 million. scikit-learn's
# curves hold several float64 and int64 arrays of that length (about 16 GB there), so the voxel metrics are
# computed here from one sorted float32 copy of the scores and the few positives' scores instead: the same
# numbers (the tests compare them with scikit-learn), in about three times the maps' own memory.


def _sorted_scores(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every voxel's score sorted ascending, and the positive voxels' scores sorted ascending."""
    s, y = _check_maps(maps, masks)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"need both positive and negative labels, got {n_pos} positive of {y.size}")
    positives = np.sort(s[y])
    del y
    return np.sort(s), positives


def voxel_auroc(maps: Any, masks: Any) -> float:
    """AUROC over all voxels: anomaly maps against ground-truth masks (flattened, pooled).

    The Mann–Whitney statistic: for each positive voxel, the negatives scoring below it plus half those tied
    with it, over (positives × negatives) — what :func:`auroc` (scikit-learn) gives, from one sort."""
    ordered, positives = _sorted_scores(maps, masks)
    n_pos = positives.size
    n_neg = ordered.size - n_pos
    below = np.searchsorted(ordered, positives, "left") - np.searchsorted(positives, positives, "left")
    upto = np.searchsorted(ordered, positives, "right") - np.searchsorted(positives, positives, "right")
    # negatives below a positive, plus half the negatives tied with it (upto - below of them)
    wins = float(below.sum(dtype=np.int64)) + 0.5 * float((upto - below).sum(dtype=np.int64))
    return wins / (float(n_pos) * float(n_neg))


def voxel_auprc(maps: Any, masks: Any) -> float:
    """Average precision over all voxels: anomaly maps against ground-truth masks.

    Σ_k (R_k − R_{k−1}) P_k over the distinct scores, as :func:`auprc` (scikit-learn): recall changes only at
    the positives' scores, by the share of positives at that score, where the precision is the positives at or
    above it over all voxels at or above it."""
    ordered, positives = _sorted_scores(maps, masks)
    n_pos = positives.size
    values, first = np.unique(positives, return_index=True)
    at_or_above = n_pos - first  # positives scoring >= each distinct positive score
    flagged = ordered.size - np.searchsorted(ordered, values, "left")  # every voxel scoring >= it
    step = np.diff(np.append(first, n_pos)) / n_pos  # the recall gained at that score
    return float(np.sum(step * (at_or_above / flagged)))


# ---------------------------------------------------------------------------- thresholds


_SWEEP_BLOCK = 1 << 18  # sorted scores handled at a time in best_dice (bounds the temporaries)


class BestDice(NamedTuple):
    """The best Dice over all thresholds and the threshold reaching it (``score >= threshold``)."""

    dice: float
    threshold: float


def _score_values(x: np.ndarray) -> np.ndarray:
    """Scores as a flat float array, float32 kept (no float64 copy of float32 maps)."""
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    elif x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("scores must be finite numbers")
    return x


def _check_maps(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps and binary masks of the same shapes (arrays ``[n, ...]`` or lists of
    arrays) as flat scores and flat booleans."""
    if isinstance(maps, (list, tuple)) or isinstance(masks, (list, tuple)):
        if len(maps) != len(masks):
            raise ValueError(f"{len(maps)} anomaly maps but {len(masks)} masks")
        for i, (m, y) in enumerate(zip(maps, masks)):
            if np.shape(m) != np.shape(y):
                raise ValueError(f"anomaly map {i} has shape {np.shape(m)} but its mask {np.shape(y)}")
    else:
        maps, masks = np.asarray(maps), np.asarray(masks)
        if maps.shape != masks.shape:
            raise ValueError(f"anomaly maps have shape {maps.shape} but the masks {masks.shape}")
    s = _score_values(flatten_maps(maps))
    raw = flatten_maps(masks)
    if raw.dtype != bool:
        if not np.all((raw == 0) | (raw == 1)):
            raise ValueError("masks must be binary: 0 (normal) or 1 (abnormal)")
        raw = raw != 0
    return s, raw


def best_dice(maps: Any, masks: Any) -> BestDice:
    """The best Dice of the thresholded anomaly ``maps`` against the ground-truth ``masks``
    over all thresholds, voxels of all volumes pooled (⌈Dice⌉, Baur et al. 2021).

    ``maps``: anomaly maps ``[n, ...]`` or a list of arrays (higher = more anomalous);
    ``masks``: binary masks of the same shapes. A voxel is predicted anomalous when its
    score is ``>= threshold``; Dice = 2 TP / (2 TP + FP + FN). Every distinct score is a
    candidate threshold (voxels of equal score are in or out together), so the value is
    exact. Among thresholds of equal Dice the highest is returned. Returns
    ``BestDice(dice, threshold)``.

    The scores are sorted once (float32 maps stay float32); the positives' scores are
    sorted apart, and at each distinct score TP is the count of positives at or above it
    and TP + FP the count of all voxels at or above it, so 2 TP + FP + FN =
    (TP + FP) + (number of positives).
    """
    s, y = _check_maps(maps, masks)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        raise ValueError("the masks have no positive voxel: Dice is undefined")
    positives = s[y]
    positives.sort()
    del y
    ordered = np.sort(s)
    n = ordered.size
    best, threshold = -1.0, math.nan
    for start in range(0, n, _SWEEP_BLOCK):
        block = ordered[start:start + _SWEEP_BLOCK]
        first = np.empty(block.size, bool)  # the first voxel of each run of equal scores
        first[0] = start == 0 or block[0] != ordered[start - 1]
        np.not_equal(block[1:], block[:-1], out=first[1:])
        at = np.flatnonzero(first)
        if at.size == 0:  # the block continues a run of ties from the block before
            continue
        values = block[at]
        predicted = n - (start + at)  # voxels scoring >= value: TP + FP
        tp = n_pos - np.searchsorted(positives, values, side="left")
        dice = 2.0 * tp / (predicted + n_pos)
        j = dice.size - 1 - int(np.argmax(dice[::-1]))  # the highest threshold of the block's best
        if dice[j] >= best:
            best, threshold = float(dice[j]), float(values[j])
    return BestDice(best, threshold)


def best_dice_value(maps: Any, masks: Any) -> float:
    """:func:`best_dice` without its threshold (the number a metric table shows)."""
    return best_dice(maps, masks).dice


def threshold_at_fpr(normal: Any, fpr: float) -> float:
    """The lowest threshold whose false-positive rate on normal data is at most ``fpr``.

    ``normal``: scores of normal samples: anomaly maps of normal volumes (an array
    ``[n, ...]`` or a list of arrays, every voxel one sample; pass ``maps[brain_mask]`` to
    count only voxels inside a region) or one score per normal volume. A sample is flagged
    when its score is ``>= threshold``, and the false-positive rate is the share of normal
    samples flagged. With ``k = floor(fpr · N)`` of the N normal scores allowed to be
    flagged, the threshold is the smallest normal score above the (N − k)-th smallest one
    (tied scores are flagged together, so fewer than k may be); where no score is above it
    (``fpr`` below 1 / N), the next number above the highest normal score in its
    floating-point type (nothing normal is flagged). ``fpr = 1`` gives the lowest score.
    """
    fpr = float(fpr)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be a rate in [0, 1], got {fpr}")
    s = _score_values(flatten_maps(normal))
    n = s.size
    if n == 0:
        raise ValueError("no normal scores")
    k = min(n, math.floor(fpr * n * (1 + 1e-12)))  # the tolerance keeps e.g. 0.29 · 100 at 29
    if k == n:
        return float(s.min())
    j = n - k - 1  # scores up to the (j+1)-th smallest stay below the threshold
    part = np.partition(s, j)
    below = part[j]
    rest = part[j + 1:]
    above = rest[rest > below]
    if above.size:
        return float(above.min())
    return float(np.nextafter(below, np.array(np.inf, dtype=below.dtype)))
