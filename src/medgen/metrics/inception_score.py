"""Inception Score from a classifier's class probabilities (Salimans et al. 2016).

IS = exp(E_x KL(p(y|x) || p(y))), computed on each of ``splits`` consecutive parts of the
samples; returns (mean, population std) over the parts, as the original implementation.
Ranges from 1 (every prediction equals the marginal) to K (confident and balanced over K
classes). For 3D medical volumes the classifier must be trained on labelled real data of
the same domain (the HA-GAN paper uses a disease-stage classifier); its numbers are only
comparable with results from that same classifier.
"""

from __future__ import annotations

import numpy as np


def inception_score(probs: np.ndarray, splits: int = 10, eps: float = 1e-12) -> tuple[float, float]:
    """IS of an ``[N, K]`` array of class probabilities (rows sum to 1)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"expected [N, K] class probabilities, got shape {probs.shape}")
    if np.any(probs < -1e-6) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("rows of the probability array must be non-negative and sum to 1")
    splits = max(1, min(splits, probs.shape[0]))
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + eps) - np.log(marginal + eps))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
