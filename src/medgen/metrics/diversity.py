"""Diversity of generated volumes: mean 3D MS-SSIM between pairs of samples.

MS-SSIM (Wang, Simoncelli & Bovik 2003) between two *different* generated
volumes measures how alike they are; its mean over random pairs is the usual
mode-collapse check for medical GANs (higher = less diverse; identical
volumes give 1).

The definition is exactly MONAI's ``compute_ms_ssim`` (Gaussian window,
K1 = 0.01, K2 = 0.03, "valid" filtering, 2x average pooling between scales,
contrast-structure terms of the finer scales and the full SSIM of the
coarsest scale, each clipped at 0, combined as a weighted geometric mean).
It is re-implemented here rather than called because MONAI filters with a
dense 11x11x11 kernel (1331 taps per voxel: ~7 s for one 128^3 pair on two CPU
cores); the Gaussian is separable, so three 1D passes (33 taps) give the same
numbers ~40x faster. The tests check the two agree.

This module also chooses the scales for the small volumes this project works
with: the standard five scales with an 11-voxel window need >= 176 voxels per
side. Rule (see :func:`ms_ssim_scales`):

* keep the 11-voxel, sigma 1.5 window and use the largest number of scales
  n <= 5 for which the coarsest scale is still at least one window wide
  (floor(side / 2**(n-1)) >= 11) and MONAI's own size check passes;
  the first n standard weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) are
  renormalised to sum to 1. Result by shortest side: 11-21 -> 1 scale (plain
  SSIM), 22-43 -> 2, 44-98 -> 3, 99-175 -> 4, >= 176 -> 5 scales;
* only when a side is shorter than 11 voxels is the window shrunk to the
  largest odd size that fits, with sigma scaled by the same factor (one scale).

Values computed with different numbers of scales are not comparable; the
result therefore records ``n_scales``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Wang et al. (2003) weights of the five scales, finest first.
STANDARD_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
STANDARD_KERNEL_SIZE = 11
STANDARD_KERNEL_SIGMA = 1.5


def ms_ssim_scales(
    shape: Sequence[int],
    kernel_size: int = STANDARD_KERNEL_SIZE,
    kernel_sigma: float = STANDARD_KERNEL_SIGMA,
    max_scales: int = len(STANDARD_WEIGHTS),
) -> tuple[int, float, tuple[float, ...]]:
    """Window size (voxels), window sigma (voxels) and per-scale weights for a volume shape.

    ``shape`` is the spatial shape (X, Y, Z). See the module docstring for the rule.
    """
    side = int(min(shape))
    if side < 3:
        raise ValueError(f"MS-SSIM needs at least 3 voxels per side, got shape {tuple(shape)}")
    if side < kernel_size:
        k = side if side % 2 == 1 else side - 1
        return k, kernel_sigma * k / kernel_size, (1.0,)
    n_scales = 1
    for n in range(1, min(max_scales, len(STANDARD_WEIGHTS)) + 1):
        fits_window = side // 2 ** (n - 1) >= kernel_size
        fits_monai_check = side // max(1, n - 1) ** 2 > kernel_size - 1
        if fits_window and fits_monai_check:
            n_scales = n
    w = np.asarray(STANDARD_WEIGHTS[:n_scales], dtype=np.float64)
    return kernel_size, kernel_sigma, tuple(float(x) for x in w / w.sum())


def _as_3d(volume: np.ndarray) -> np.ndarray:
    v = np.asarray(volume)
    if v.ndim == 4 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 3:
        raise ValueError(f"expected a 3D volume (X, Y, Z) or (1, X, Y, Z), got shape {v.shape}")
    return v


def _gaussian_1d(kernel_size: int, sigma: float):
    """Normalised 1D Gaussian taps centred on the window (same as MONAI's)."""
    import torch

    dist = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-0.5 * (dist / sigma) ** 2)
    return (g / g.sum()).float()


def _ssim_and_cs(a, b, data_range: float, taps, k1: float = 0.01, k2: float = 0.03):
    """Per-voxel SSIM and contrast-structure maps of two [B, 1, X, Y, Z] tensors
    (valid region only), filtering the five local moments in one grouped pass."""
    import torch
    import torch.nn.functional as F

    k = taps.numel()
    x = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    t = taps.to(device=a.device, dtype=a.dtype)
    for shape in ((k, 1, 1), (1, k, 1), (1, 1, k)):
        x = F.conv3d(x, t.view(1, 1, *shape).expand(5, 1, *shape), groups=5)
    mu_a, mu_b, m_aa, m_bb, m_ab = x.unbind(dim=1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    var_a, var_b, cov = m_aa - mu_a * mu_a, m_bb - mu_b * mu_b, m_ab - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    ssim = (2 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1) * cs
    return ssim, cs


def _ms_ssim_batch(a, b, data_range: float, kernel_size: int, kernel_sigma: float, weights):
    """MS-SSIM of each pair in two [B, 1, X, Y, Z] float tensors -> [B] tensor."""
    import torch
    import torch.nn.functional as F

    taps = _gaussian_1d(kernel_size, kernel_sigma)
    terms = []
    for scale in range(len(weights)):
        ssim, cs = _ssim_and_cs(a, b, data_range, taps)
        last = scale == len(weights) - 1
        terms.append(torch.relu((ssim if last else cs).flatten(1).mean(1)))
        if not last:
            a, b = F.avg_pool3d(a, 2), F.avg_pool3d(b, 2)
    w = torch.tensor(weights, dtype=a.dtype, device=a.device)
    return torch.prod(torch.stack(terms) ** w[:, None], dim=0)


def ms_ssim_3d(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float = 2.0,
    kernel_size: int = STANDARD_KERNEL_SIZE,
    kernel_sigma: float = STANDARD_KERNEL_SIGMA,
    max_scales: int = len(STANDARD_WEIGHTS),
) -> float:
    """3D MS-SSIM of two volumes of equal shape (X, Y, Z).

    ``data_range`` is the intensity range (2.0 for volumes in [-1, 1]);
    ``kernel_size``/``kernel_sigma`` are the Gaussian window in voxels. The
    number of scales is chosen by :func:`ms_ssim_scales`. Symmetric in a, b;
    1.0 for identical volumes.
    """
    import torch

    a3, b3 = _as_3d(a), _as_3d(b)
    if a3.shape != b3.shape:
        raise ValueError(f"volumes differ in shape: {a3.shape} vs {b3.shape}")
    k, sigma, weights = ms_ssim_scales(a3.shape, kernel_size, kernel_sigma, max_scales)
    ta = torch.from_numpy(np.ascontiguousarray(a3, dtype=np.float32))[None, None]
    tb = torch.from_numpy(np.ascontiguousarray(b3, dtype=np.float32))[None, None]
    with torch.no_grad():
        return float(_ms_ssim_batch(ta, tb, data_range, k, sigma, weights)[0])


def sample_pairs(n: int, max_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """Distinct unordered index pairs (i < j) of ``n`` items: all of them if there
    are at most ``max_pairs``, else ``max_pairs`` drawn uniformly without replacement."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    rng = np.random.default_rng(seed)
    if total <= 2_000_000:
        ii, jj = np.triu_indices(n, k=1)
        pick = np.sort(rng.choice(total, size=max_pairs, replace=False))
        return [(int(ii[p]), int(jj[p])) for p in pick]
    # Too many pairs to enumerate; max_pairs << total, so rejection is cheap.
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < max_pairs:
        i, j = rng.choice(n, size=2, replace=False)
        chosen.add((int(min(i, j)), int(max(i, j))))
    return sorted(chosen)


def ms_ssim_diversity(
    volumes: Sequence[np.ndarray],
    *,
    max_pairs: int = 50,
    seed: int = 0,
    data_range: float = 2.0,
    batch_voxels: int = 2**24,
    device: str | None = None,
) -> dict:
    """Mean 3D MS-SSIM over random distinct pairs of volumes (higher = less diverse).

    ``volumes``: equally shaped (X, Y, Z) arrays with intensities in [-1, 1]
    (arrays may be memory-mapped; each is read only when its pair is scored).
    Uses all pairs when there are at most ``max_pairs``, else ``max_pairs``
    random pairs drawn with ``seed``. Pairs are scored in torch batches of about
    ``batch_voxels`` voxels per volume tensor, on ``device`` (default CPU).

    Returns ``{"mean", "std", "n_pairs", "n_scales"}``: mean and (population)
    standard deviation of the pair scores, the number of pairs, and the number
    of MS-SSIM scales used for this volume size.
    """
    import torch

    n = len(volumes)
    if n < 2:
        raise ValueError(f"MS-SSIM diversity needs at least 2 volumes, got {n}")
    shape = _as_3d(volumes[0]).shape
    k, sigma, weights = ms_ssim_scales(shape)
    pairs = sample_pairs(n, max_pairs, seed)
    per_batch = max(1, batch_voxels // int(np.prod(shape)))
    dev = torch.device(device or "cpu")

    def load(i: int) -> torch.Tensor:
        v = _as_3d(volumes[i])
        if v.shape != shape:
            raise ValueError(f"volume {i} has shape {v.shape}, expected {shape}")
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))

    scores: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(pairs), per_batch):
            chunk = pairs[start : start + per_batch]
            a = torch.stack([load(i) for i, _ in chunk])[:, None].to(dev)
            b = torch.stack([load(j) for _, j in chunk])[:, None].to(dev)
            scores.append(_ms_ssim_batch(a, b, data_range, k, sigma, weights).double().cpu().numpy())
    s = np.concatenate(scores)
    return {"mean": float(s.mean()), "std": float(s.std()), "n_pairs": int(s.size), "n_scales": len(weights)}
