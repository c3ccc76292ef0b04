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

Both need positives and negatives among the labels (ValueError otherwise).
"""

from __future__ import annotations

from typing import Any

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


def voxel_auroc(maps: Any, masks: Any) -> float:
    """AUROC over all voxels: anomaly maps against ground-truth masks (flattened, pooled)."""
    return auroc(flatten_maps(maps), flatten_maps(masks))


def voxel_auprc(maps: Any, masks: Any) -> float:
    """Average precision over all voxels: anomaly maps against ground-truth masks."""
    return auprc(flatten_maps(maps), flatten_maps(masks))
