"""Metrics of a deformable registration: Jacobian determinant, folding, Dice of warped label maps, TRE.

Convention (shared with the ``registration`` family, :mod:`medgen.inference.classical_registration` and
``medgen register``): a displacement field ``u`` is an array ``[3, X, Y, Z]`` in voxels, component ``d``
along array axis ``d`` (the axes of the ``(X, Y, Z)`` volume, in that order). It defines the transform
``φ(p) = p + u(p)`` from the fixed image's grid into the moving image, and the moving image resampled onto
the fixed grid is ``warped(p) = moving(p + u(p))`` (a "pull" field, as ITK's and MONAI's ``Warp`` use it).

* :func:`jacobian_determinant`: ``det(I + ∇u)`` per voxel, by central differences (one-sided at the border;
  ``numpy.gradient``). It is dimensionless: the same for ``u`` in voxels or in millimetres along the axes
  (pass ``spacing`` then), since a per-axis scaling cancels in the determinant. 1 preserves volume, > 1
  maps a voxel of the fixed grid onto a larger region of the moving image (which the warp shrinks there),
  ≤ 0 is a fold (the transform is not invertible there).
* :func:`folding_fraction`: the share of voxels (inside an optional mask) with ``det ≤ 0``.
* :func:`warped_label_dice`: per-label Dice of a warped label map against the fixed one
  (:func:`medgen.metrics.overlap.dice`).
* :func:`target_registration_error`: ``|u_est − u_true|`` in millimetres per voxel (components scaled by the
  voxel ``spacing``), summarised as mean, median, 95th percentile and maximum over a mask.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def check_displacement(displacement: Any, what: str = "displacement") -> np.ndarray:
    """``displacement`` as float64 ``[3, X, Y, Z]``; ValueError (one line) for another shape."""
    u = np.asarray(displacement, dtype=np.float64)
    if u.ndim != 4 or u.shape[0] != 3:
        raise ValueError(f"{what} of shape {u.shape}: need [3, X, Y, Z] (one component per axis, in voxels)")
    return u


def _mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.shape != tuple(shape):
        raise ValueError(f"mask of shape {m.shape}: need the volume's {tuple(shape)}")
    return m


def jacobian_determinant(displacement: Any, spacing: Sequence[float] | None = None) -> np.ndarray:
    """``det(I + ∇u)`` of the transform ``p ↦ p + u(p)`` at every voxel, ``(X, Y, Z)`` float64 (module docstring).

    ``displacement``: ``[3, X, Y, Z]`` in voxels, or in millimetres along the axes when ``spacing`` (the voxel
    size in mm along X, Y, Z) is given. Each axis needs at least 2 voxels."""
    u = check_displacement(displacement)
    if min(u.shape[1:]) < 2:
        raise ValueError(f"displacement of shape {u.shape}: need at least 2 voxels along every axis")
    if spacing is not None:
        s = np.asarray(spacing, dtype=np.float64)
        if s.shape != (3,) or np.any(s <= 0):
            raise ValueError(f"spacing {tuple(spacing)}: need three positive voxel sizes")
        u = u / s[:, None, None, None]
    # J[i][j] = δ_ij + ∂u_i/∂p_j
    J = [[np.gradient(u[i], axis=j) + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    return (J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1])
            - J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0])
            + J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0]))


def folding_fraction(jacobian: Any, mask: Any = None) -> float:
    """The share (0..1) of voxels, inside ``mask`` when given, whose Jacobian determinant is ≤ 0."""
    jac = np.asarray(jacobian, dtype=np.float64)
    m = _mask(mask, jac.shape)
    values = jac[m] if m is not None else jac.ravel()
    if values.size == 0:
        return math.nan
    return float(np.mean(values <= 0))


def jacobian_summary(jacobian: Any, mask: Any = None) -> dict[str, float]:
    """min, max, mean and std of the Jacobian determinant and its folding share and percentage."""
    jac = np.asarray(jacobian, dtype=np.float64)
    m = _mask(mask, jac.shape)
    values = jac[m] if m is not None else jac.ravel()
    if values.size == 0:
        return {k: math.nan for k in ("min", "max", "mean", "std", "folding_fraction", "folding_percent")}
    fold = float(np.mean(values <= 0))
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
            "std": float(values.std()), "folding_fraction": fold, "folding_percent": 100.0 * fold}


def warped_label_dice(warped: Any, fixed: Any, labels: Sequence[int] | None = None) -> dict[str, float]:
    """``{"dice_<k>": ..., "dice_mean": ...}``: Dice of every label ``k`` (default: the nonzero labels of either
    map) between the warped moving label map and the fixed one; the mean over labels present in either
    (NaN when none is). Label maps are rounded to integers."""
    from medgen.metrics.overlap import dice, labels_of

    w, f = np.rint(np.asarray(warped)).astype(np.int64), np.rint(np.asarray(fixed)).astype(np.int64)
    if w.ndim != 3 or w.shape != f.shape:
        raise ValueError(f"label maps of shapes {w.shape} and {f.shape}: need two (X, Y, Z) maps of one shape")
    ks = labels_of(w, f) if labels is None else [int(k) for k in labels]
    row = {f"dice_{k}": dice(w, f, k) for k in ks}
    present = [v for v in row.values() if not math.isnan(v)]
    row["dice_mean"] = float(np.mean(present)) if present else math.nan
    return row


def displacement_error_mm(estimated: Any, true: Any, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """``|u_est − u_true|`` per voxel in mm, ``(X, Y, Z)``: both fields ``[3, X, Y, Z]`` in voxels, the
    components scaled by the voxel size ``spacing`` (mm along X, Y, Z)."""
    a, b = check_displacement(estimated, "estimated displacement"), check_displacement(true, "true displacement")
    if a.shape != b.shape:
        raise ValueError(f"displacements of shapes {a.shape} and {b.shape}: need one shape")
    s = np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)
    return np.sqrt((((a - b) * s) ** 2).sum(0))


def target_registration_error(estimated: Any, true: Any, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                              mask: Any = None) -> dict[str, float]:
    """Target registration error of an estimated displacement against the true one, in mm, over ``mask``
    (default every voxel): ``{"mean", "median", "p95", "max"}`` of :func:`displacement_error_mm`."""
    err = displacement_error_mm(estimated, true, spacing)
    m = _mask(mask, err.shape)
    values = err[m] if m is not None else err.ravel()
    if values.size == 0:
        return {k: math.nan for k in ("mean", "median", "p95", "max")}
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def displacement_magnitude_mm(displacement: Any, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """mean, 95th percentile and maximum of ``|u|`` in mm (``u`` in voxels, scaled by ``spacing``)."""
    u = check_displacement(displacement)
    mag = np.sqrt(((u * np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)) ** 2).sum(0))
    return {"mean": float(mag.mean()), "p95": float(np.percentile(mag, 95)), "max": float(mag.max())}


def normalized_cross_correlation(a: Any, b: Any, mask: Any = None) -> float:
    """Global normalised cross-correlation of two volumes (1: identical up to a positive linear map)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"volumes of shapes {x.shape} and {y.shape}: need one shape")
    m = _mask(mask, x.shape)
    if m is not None:
        x, y = x[m], y[m]
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else math.nan


def similarity(warped: Any, fixed: Any, mask: Any = None) -> dict[str, float]:
    """``{"mse", "ncc"}`` of the warped moving image against the fixed one (before/after tables)."""
    x, y = np.asarray(warped, dtype=np.float64), np.asarray(fixed, dtype=np.float64)
    m = _mask(mask, x.shape)
    diff = (x - y)[m] if m is not None else (x - y)
    return {"mse": float(np.mean(diff ** 2)) if diff.size else math.nan,
            "ncc": normalized_cross_correlation(x, y, mask)}
