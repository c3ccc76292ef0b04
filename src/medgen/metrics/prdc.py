"""Precision, recall, density and coverage (Naeem et al., ICML 2020) on feature sets.

Each real sample i gets a ball of radius r_i = distance to its k-th nearest other real
sample (likewise for fake samples). With strict inequalities as in the reference code:

* precision = share of fake samples inside at least one real ball (fidelity);
* recall    = share of real samples inside at least one fake ball (diversity);
* density   = (1/k) · mean over fake samples of the number of real balls containing it
  (≈ 1 when fake matches real, > 1 when fakes crowd dense real regions);
* coverage  = share of real samples whose ball contains at least one fake sample.

Recall and coverage depend on the two set sizes, not only on the distributions. A generator that
draws from the real distribution itself covers, in expectation, :func:`expected_coverage` of N real
samples with M fake ones: about 1 − 2⁻ᵏ (0.97 at k = 5) when M = N, as in Naeem et al.'s
experiments, but only 0.87 with 64 fake against 128 real. With fewer fake samples the fake balls
are larger, so recall comes out higher instead. Compare at equal sizes, or against
:func:`expected_coverage`.

Distances are exact pairwise differences (``scipy.spatial.distance.cdist``), not the faster
``|x|² + |y|² - 2 x·y`` shortcut: with the shortcut, features with a large common offset
lose precision and equal distances computed in different matrices round differently, so
the strict inequalities flip on ties — a set compared with itself gets density ≠ 1.
"""

from __future__ import annotations

from math import comb

import numpy as np
from scipy.spatial.distance import cdist


def knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.shape[0] <= k:
        raise ValueError(f"need more than k={k} samples, got {feats.shape[0]}")
    d = cdist(feats, feats)
    return np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself


def expected_coverage(n_real: int, n_fake: int, k: int = 5) -> float:
    """Expected coverage of ``n_fake`` samples drawn from the same continuous distribution as the
    ``n_real`` real ones (Naeem et al. 2020): real sample i is uncovered when its k nearest neighbours
    among the other n_real − 1 + n_fake samples are all real, and with every sample drawn alike each
    k-subset of them is equally likely to be the nearest, so 1 − C(n_real − 1, k) / C(n_real − 1 + n_fake, k)."""
    if n_real <= k or n_fake < 1:
        raise ValueError(f"need more than k={k} real samples and at least one fake, got {n_real} and {n_fake}")
    return 1.0 - comb(n_real - 1, k) / comb(n_real - 1 + n_fake, k)


def membership(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, np.ndarray]:
    """Which samples count for each of :func:`prdc`'s shares (boolean arrays):

    * ``"precise"`` [n_fake]: fake sample inside at least one real ball (precision's);
    * ``"recalled"`` [n_real]: real sample inside at least one fake ball (recall's);
    * ``"covered"`` [n_real]: real sample whose ball holds at least one fake sample (coverage's);
    * ``"real_balls_per_fake"`` [n_fake] (integers): real balls holding each fake sample (density's).

    The real samples that are not recalled or not covered are the part of the real distribution
    the generated set misses."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    r_real = knn_radii(real, k)
    r_fake = knn_radii(fake, k)
    d = cdist(real, fake)  # [n_real, n_fake]
    inside_real = d < r_real[:, None]
    return {
        "precise": inside_real.any(axis=0),
        "recalled": (d < r_fake[None, :]).any(axis=1),
        "covered": d.min(axis=1) < r_real,
        "real_balls_per_fake": inside_real.sum(axis=0),
    }


def shares(m: dict[str, np.ndarray], k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage from :func:`membership`'s arrays (computed with the same k)."""
    return {
        "precision": float(m["precise"].mean()),
        "recall": float(m["recalled"].mean()),
        "density": float(m["real_balls_per_fake"].mean() / k),
        "coverage": float(m["covered"].mean()),
    }


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision/recall/density/coverage of ``fake`` with respect to ``real`` ([N, d] each)."""
    return shares(membership(real, fake, k), k)
