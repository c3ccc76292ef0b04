"""Uncertainty of a two-sample metric: bootstrap resamples or disjoint splits.

The HA-GAN paper reports mean ± std (its code repeats the evaluation per cross-validation
fold). We offer the two usual single-run estimates; the std is the population std (ddof=0)
of the replicate values.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def bootstrap(metric_fn: MetricFn, a: np.ndarray, b: np.ndarray, n: int = 10, seed: int = 0) -> tuple[float, float]:
    """Mean and std of ``metric_fn(a*, b*)`` over ``n`` bootstrap replicates.

    Each replicate draws the rows of ``a`` and of ``b`` with replacement (same sizes).
    Duplicated rows make within-set distances zero, so kernel and k-NN metrics shift
    slightly under resampling: compare bootstrap numbers only with bootstrap numbers.
    """
    rng = np.random.default_rng(seed)
    values = [metric_fn(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(n)]
    return float(np.mean(values)), float(np.std(values))


def splits(metric_fn: MetricFn, a: np.ndarray, b: np.ndarray, n_splits: int = 5, seed: int = 0) -> tuple[float, float]:
    """Mean and std of ``metric_fn(a, part)`` over ``n_splits`` disjoint random parts of ``b``.

    ``a`` (usually the real set) is used whole each time; each part of ``b`` (the generated
    set) has about ``len(b) / n_splits`` rows, so the values are those of the smaller size.
    """
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(len(b)), n_splits)
    values = [metric_fn(a, b[idx]) for idx in parts]
    return float(np.mean(values)), float(np.std(values))
