"""Random fields used to give phantoms natural, subject-specific variation.

Two kinds:

* :class:`LatticeField` — a smooth field defined in millimetres by random cubic
  B-spline coefficients on a coarse lattice. It does not depend on the voxel
  grid, so the same subject looks the same at 64³ and 256³, and it can be
  evaluated at arbitrary points (used to keep vessel trees inside the lungs).
* :func:`smooth_noise` — voxel-grid Gaussian-filtered white noise, for fine
  textures (lung parenchyma, emphysema holes, CT noise correlation).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

# Mean over positions of sum_i B3(t - i)^2 for the cubic B-spline: the variance
# of a 1D spline with unit-variance i.i.d. coefficients, averaged over t.
_B3_VARIANCE_1D = 151.0 / 315.0


def _bspline3(s: np.ndarray) -> np.ndarray:
    """Uniform cubic B-spline kernel (support [-2, 2])."""
    a = np.abs(s)
    out = np.zeros_like(a)
    inner = a < 1
    outer = (a >= 1) & (a < 2)
    out[inner] = 2.0 / 3.0 - a[inner] ** 2 + 0.5 * a[inner] ** 3
    out[outer] = (2.0 - a[outer]) ** 3 / 6.0
    return out


class LatticeField:
    """Smooth scalar random field on a cube of side ``extent_mm`` centred at 0.

    ``spacing_mm`` is the distance between B-spline knots: features of the field
    are about that size. Values have about unit standard deviation.
    """

    def __init__(self, rng: np.random.Generator, extent_mm: float, spacing_mm: float) -> None:
        self.spacing = float(spacing_mm)
        n = int(np.ceil(extent_mm / spacing_mm)) + 4  # two extra knots on each side
        self.start = -0.5 * (n - 1) * self.spacing
        scale = 1.0 / np.sqrt(_B3_VARIANCE_1D**3)
        self.coef = (rng.standard_normal((n, n, n)) * scale).astype(np.float64)

    def _weights(self, coords_mm: np.ndarray) -> np.ndarray:
        t = (np.asarray(coords_mm, dtype=np.float64).reshape(-1, 1) - self.start) / self.spacing
        knots = np.arange(self.coef.shape[0], dtype=np.float64)[None, :]
        return _bspline3(t - knots)

    def on_grid(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Field on the grid spanned by the 1D axes ``x``, ``y``, ``z`` (mm); float32."""
        wx, wy, wz = self._weights(x), self._weights(y), self._weights(z)
        out = np.einsum("ia,jb,kc,abc->ijk", wx, wy, wz, self.coef, optimize=True)
        return out.astype(np.float32)

    def at(self, points: np.ndarray) -> np.ndarray:
        """Field at ``points`` (N, 3) in mm (only the 4×4×4 supporting knots are visited)."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        n = self.coef.shape[0]
        t = (points - self.start) / self.spacing  # (N, 3) in knot units
        base = np.floor(t).astype(int) - 1
        idx = base[:, :, None] + np.arange(4)[None, None, :]  # (N, 3, 4)
        w = _bspline3(t[:, :, None] - idx)
        idx = np.clip(idx, 0, n - 1)
        c = self.coef[idx[:, 0, :, None, None], idx[:, 1, None, :, None], idx[:, 2, None, None, :]]
        return np.einsum("na,nb,nc,nabc->n", w[:, 0], w[:, 1], w[:, 2], c)


def smooth_noise(
    shape: tuple[int, ...], sigma_vox: float | Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (float32).

    ``sigma_vox`` is the correlation length in voxels, one for every axis or one per
    axis (anisotropic voxels). Large sigmas are made on a coarser grid and
    interpolated up, which is much cheaper and looks the same.
    """
    sigma = [float(v) for v in np.broadcast_to(np.asarray(sigma_vox, dtype=np.float64), (len(shape),))]
    if max(sigma) < 0.3:
        return rng.standard_normal(shape, dtype=np.float32)
    factor = [int(v // 2) if v >= 4 else 1 for v in sigma]
    coarse = any(f > 1 for f in factor)
    small = tuple(int(np.ceil(n / f)) + 1 if f > 1 else n for n, f in zip(shape, factor)) if coarse else shape
    field = rng.standard_normal(small, dtype=np.float32)
    field = ndi.gaussian_filter(field, [v / f for v, f in zip(sigma, factor)], truncate=3.0, mode="wrap")
    if coarse:
        zoom = [n / m for n, m in zip(shape, small)]
        field = ndi.zoom(field, zoom, order=1, grid_mode=False)[tuple(slice(0, n) for n in shape)]
    field -= field.mean()
    field /= field.std() + 1e-12
    return field
