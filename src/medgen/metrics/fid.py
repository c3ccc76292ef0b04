"""Fréchet distance between Gaussian fits of two feature sets (FID, Heusel et al. 2017).

FID = ||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}), in squared feature units.
Means and covariances (ddof=1, as the HA-GAN authors' evaluation code) are taken over
samples (rows). With fewer samples than feature dimensions the covariances are
rank-deficient and FID is biased upward: compare values only at equal sample sizes.
"""

from __future__ import annotations

import numpy as np


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    eigval, eigvec = np.linalg.eigh(matrix)
    return (eigvec * np.sqrt(np.clip(eigval, 0.0, None))) @ eigvec.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^{1/2}) for symmetric PSD S1, S2.

    Computed as Tr((S1^{1/2} S2 S1^{1/2})^{1/2}): the two matrices are similar, the second
    is symmetric PSD, so its eigenvalues are real and ``eigh`` is exact and stable. This
    avoids ``scipy.linalg.sqrtm`` of the non-symmetric product (slow for 2048-d and prone to
    spurious imaginary parts on rank-deficient covariances).
    """
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2.0
    eigval = np.linalg.eigvalsh(middle)
    return float(np.sqrt(np.clip(eigval, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: means {mu1.shape} vs {mu2.shape}, covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def gaussian_fit(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1) of the rows of an ``[N, d]`` feature array."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need an [N, d] feature array with N >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False, ddof=1).reshape(feats.shape[1], feats.shape[1])


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets ``[N_a, d]`` and ``[N_b, d]``.

    When ``N_a · N_b <= d²`` (few samples, e.g. 2048-d features of tens of volumes) the
    covariance term is computed in sample space, without any d×d matrix: with centred
    features A, B, S_a S_b has the same nonzero eigenvalues as (A Bᵀ)(A Bᵀ)ᵀ/((N_a-1)(N_b-1)),
    so Tr((S_a S_b)^{1/2}) is the sum of singular values of A Bᵀ / sqrt((N_a-1)(N_b-1)).
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N, d] feature arrays with N >= 2 and equal d, got {a.shape} and {b.shape}")
    n_a, n_b, d = len(a), len(b), a.shape[1]
    if n_a * n_b > d * d:
        mu_a, s_a = gaussian_fit(a)
        mu_b, s_b = gaussian_fit(b)
        return frechet_distance(mu_a, s_a, mu_b, s_b)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mu_a, b - mu_b
    tr_a = (ca * ca).sum() / (n_a - 1)
    tr_b = (cb * cb).sum() / (n_b - 1)
    tr_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt((n_a - 1) * (n_b - 1))
    diff = mu_a - mu_b
    return float(max(diff @ diff + tr_a + tr_b - 2.0 * tr_sqrt, 0.0))
