"""Kernel Inception Distance (KID, Bińkowski et al. 2018) on arbitrary features.

KID is the unbiased estimate of the squared MMD with the polynomial kernel
k(x, y) = (gamma · x·y + coef0)^degree, gamma = 1/d by default, averaged over random
subsets of equal size m drawn without replacement from each set (as StyleGAN2-ADA and
torchmetrics do). Unbiased: within-set sums exclude the diagonal, so KID can be slightly
negative when the two sets come from the same distribution.
"""

from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """Gram matrix ``(gamma x·y + coef0)^degree`` between the rows of x and y."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased_from_kernels(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD² from Gram matrices (diagonals of k_xx and k_yy are excluded)."""
    n, m = k_xx.shape[0], k_yy.shape[0]
    term_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    term_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(term_x + term_y - 2.0 * k_xy.mean())


def kid(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between ``[N_a, d]`` and ``[N_b, d]`` features: (mean, std) over subsets.

    ``subset_size`` is capped at min(N_a, N_b); std is the population std (ddof=0) of the
    per-subset values, as torchmetrics reports it.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[s] = mmd2_unbiased_from_kernels(
            polynomial_kernel(x, x, degree, gamma, coef0),
            polynomial_kernel(y, y, degree, gamma, coef0),
            polynomial_kernel(x, y, degree, gamma, coef0),
        )
    return float(values.mean()), float(values.std())
