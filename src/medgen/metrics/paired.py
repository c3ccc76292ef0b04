"""Paired metrics: one output volume against its target (reconstruction, translation, denoising).

Each function compares one ``(x, y, z)`` volume with its target of the same shape and
returns one number; :func:`medgen.metrics.evaluate.evaluate_paired` applies them volume by
volume and summarises them as mean ± std. An optional ``mask`` (boolean volume of the same
shape) restricts the comparison to its voxels.

``data_range`` is the width of the intensity interval, max − min of the allowed values: 2
for medgen's [-1, 1] convention (as ``skimage.metrics`` and MONAI define it; MONAI's
``PSNRMetric`` calls it ``max_val``).

* :func:`psnr` — peak signal-to-noise ratio, 10·log10(data_range² / MSE) in dB (MONAI
  ``PSNRMetric``); infinite for identical volumes.
* :func:`ssim` — structural similarity in 3D (MONAI ``SSIMMetric``/``compute_ssim_and_cs``
  with ``spatial_dims=3``): Gaussian window of 11 voxels, σ = 1.5, K1 = 0.01, K2 = 0.03,
  population (co)variances, averaged over the voxels whose window lies inside the volume
  (no padding; equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=...)``). Needs at least 11 voxels per
  side. With a mask, the mean of the SSIM map over the mask's voxels in that interior region.
* :func:`nmse` — normalised mean squared error ||output − target||² / ||target||² (not in
  MONAI); 0 for identical volumes, 1 for an all-zero output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _pair(output: Any, target: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    out = np.asarray(output, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    if out.ndim != 3 or out.shape != tgt.shape:
        raise ValueError(f"output of shape {out.shape} and target of shape {tgt.shape}: need two (X, Y, Z) volumes of one shape")
    m = None
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != out.shape:
            raise ValueError(f"mask of shape {m.shape} for volumes of shape {out.shape}")
        if not m.any():
            raise ValueError("the mask holds no voxel")
    return out, tgt, m


def _torch(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))


def psnr(output: Any, target: Any, mask: Any = None, data_range: float = 2.0) -> float:
    """PSNR in dB, 10·log10(data_range² / MSE), MSE over the volume (or the mask's voxels).

    ``inf`` when the volumes are identical (reported as null in JSON)."""
    from monai.metrics import PSNRMetric

    out, tgt, m = _pair(output, target, mask)
    if m is not None:
        out, tgt = out[m], tgt[m]
    # MONAI: 20·log10(max_val) − 10·log10(mean squared error over all but the batch axis).
    value = PSNRMetric(max_val=float(data_range), reduction="none")(_torch(out.reshape(1, 1, -1)), _torch(tgt.reshape(1, 1, -1)))
    return float(value.reshape(-1)[0])


def ssim(output: Any, target: Any, mask: Any = None, data_range: float = 2.0) -> float:
    """3D SSIM (see the module docstring), within ``mask`` if given."""
    from monai.metrics.regression import compute_ssim_and_cs

    out, tgt, m = _pair(output, target, mask)
    if min(out.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW} voxels per side (window of {SSIM_WINDOW}), got {out.shape}")
    ssim_map, _ = compute_ssim_and_cs(
        _torch(out[None, None]), _torch(tgt[None, None]), spatial_dims=3,
        kernel_size=[SSIM_WINDOW] * 3, kernel_sigma=[SSIM_SIGMA] * 3, data_range=float(data_range),
        kernel_type="gaussian", k1=0.01, k2=0.03,
    )
    values = ssim_map[0, 0].double().numpy()  # the interior: each side shorter by SSIM_WINDOW − 1
    if m is None:
        return float(values.mean())
    r = SSIM_WINDOW // 2
    inner = m[r:-r, r:-r, r:-r]
    if not inner.any():
        raise ValueError(f"SSIM: the mask holds no voxel at least {r} voxels inside the volume")
    return float(values[inner].mean())


def nmse(output: Any, target: Any, mask: Any = None, data_range: float = 2.0) -> float:
    """||output − target||² / ||target||² (over the mask's voxels if given); ``data_range`` is unused."""
    out, tgt, m = _pair(output, target, mask)
    if m is not None:
        out, tgt = out[m], tgt[m]
    denom = float(np.sum(tgt * tgt))
    if denom == 0.0:
        raise ValueError("NMSE is undefined for an all-zero target")
    return float(np.sum((out - tgt) ** 2) / denom)
