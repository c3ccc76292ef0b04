"""MMD² with a Gaussian kernel and median-heuristic bandwidth, as in the HA-GAN paper.

Convention (the HA-GAN authors' evaluation uses ``torch_two_sample.MMDStatistic`` with
``alphas='median'``; we reimplement that convention, we do not import it):

* kernel ``k(x, y) = exp(-||x - y||² / l²)`` (i.e. ``exp(-d²/(2σ²))`` with ``σ = l/√2``);
* ``l`` = median of ALL entries of the pooled ``(n+m)×(n+m)`` Euclidean distance matrix,
  including its zero diagonal and both triangles; for an even count the lower of the two
  middle values (as ``torch.median``);
* the unbiased estimator (within-set diagonals excluded), so the value can be slightly
  negative for samples of the same distribution; its maximum is 2.

The convention matters: the common alternative (σ = median off-diagonal distance,
``exp(-d²/(2σ²))``) gives a kernel twice as wide in d² and markedly smaller values, so MMD
numbers are only comparable under the same convention.
"""

from __future__ import annotations

import numpy as np

from medgen.metrics.kid import mmd2_unbiased_from_kernels


def pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of x and y (float64)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.clip(sq, 0.0, None))


def median_heuristic(a: np.ndarray, b: np.ndarray) -> float:
    """Kernel length ``l``: lower median of the pooled distance matrix (diagonal included)."""
    pooled = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
    d = pairwise_distances(pooled, pooled)
    np.fill_diagonal(d, 0.0)
    flat = d.ravel()
    k = (flat.size - 1) // 2
    return float(np.partition(flat, k)[k])


def mmd2_gaussian(a: np.ndarray, b: np.ndarray, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """MMD² between ``[n, d]`` and ``[m, d]`` samples, kernel ``exp(-d²/bandwidth²)``.

    ``bandwidth`` (feature units) defaults to :func:`median_heuristic`. ``unbiased=False``
    gives the biased V-statistic (diagonals included, always >= 0).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if bandwidth is None:
        bandwidth = median_heuristic(a, b)
    if not bandwidth > 0:
        return 0.0  # all points coincide: the two samples are identical
    scale = 1.0 / bandwidth**2
    k_aa = np.exp(-scale * pairwise_distances(a, a) ** 2)
    k_bb = np.exp(-scale * pairwise_distances(b, b) ** 2)
    k_ab = np.exp(-scale * pairwise_distances(a, b) ** 2)
    np.fill_diagonal(k_aa, 1.0)
    np.fill_diagonal(k_bb, 1.0)
    if unbiased:
        return mmd2_unbiased_from_kernels(k_aa, k_bb, k_ab)
    return float(k_aa.mean() + k_bb.mean() - 2.0 * k_ab.mean())
