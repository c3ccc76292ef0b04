"""How many independent directions a set of volumes varies along: the principal-component spectrum.

A generator can match every one-number statistic's mean and spread and still vary along
fewer directions than real data: its samples differ mainly in one factor (say, body
size) and carry the others along with it, where real anatomy varies them independently.
Pairwise MS-SSIM and recall do not see this; the spectrum of the set's covariance does.

Each volume is block-averaged to a coarse ``grid``³ (default 16³: the layout of organs,
not their texture or noise), the set is centred, and the eigenvalues λ₁ ≥ λ₂ ≥ … of its
sample covariance (ddof = 1) are computed by SVD. Reported per set:

* ``participation_ratio`` (Σλ)² / Σλ²: 1 when all variance lies along one direction, k
  when it spreads evenly over k directions (the "effective dimensionality" of
  neuroscience and of representation-collapse studies);
* ``components_90``: how many principal components hold 90 % of the variance;
* ``first_share``: the share of the first component;
* ``total_variance``: Σλ divided by the number of voxels of the coarse grid, the mean
  voxel variance (intensity units², in [-1, 1]);
* ``cumulative``: the cumulative variance shares of the first components (the figure).

Read the participation ratio together with the total variance: a collapsed generator's
samples differ by little, and that little is noise spread over many directions, so its
ratio can exceed the real set's (``medgen evaluate`` says so when the generated total
variance is under half the real one).

Both estimates grow with the number of volumes (at most n − 1 directions can be seen),
so the larger set is reduced to the smaller one's size by a seeded random subset before
anything is computed; values are comparable only at equal sample sizes.

Not from MONAI or TorchIO: neither has a set-level spectrum; the PCA is NumPy's SVD
(the tests check it against scikit-learn's PCA).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medgen.core.errors import UsageError

#: Edge of the coarse grid volumes are averaged down to (voxels per side).
DEFAULT_GRID = 16
#: Cumulative shares kept for the figure and the report (first components).
CUMULATIVE_KEEP = 32


def coarse_matrix(volumes: Sequence[np.ndarray], grid: int = DEFAULT_GRID, progress: bool = False,
                  desc: str = "volumes") -> np.ndarray:
    """Volumes [n] of shape (X, Y, Z) or (1, X, Y, Z) → float64 [n, g³] of block averages.

    ``g`` is ``grid``, or the shortest side when a volume is smaller; averaging is
    PyTorch's adaptive average pooling (exact block means when the side is a multiple of g).
    ``progress``: a progress bar over the volumes (they are read here, one by one).
    """
    from tqdm import tqdm

    if grid < 1:
        raise UsageError(f"dimensionality: grid {grid} must be at least 1")
    rows = []
    for v in tqdm(volumes, desc=f"dimensionality {desc}", disable=not progress, leave=False):
        a = np.asarray(v, dtype=np.float32)
        a = a.reshape(a.shape[-3:]) if a.ndim == 4 and a.shape[0] == 1 else a
        if a.ndim != 3:
            raise UsageError(f"dimensionality: expected 3D volumes, got shape {np.asarray(v).shape}")
        g = min(grid, *a.shape)
        pooled = F.adaptive_avg_pool3d(torch.from_numpy(np.ascontiguousarray(a))[None, None], g)
        rows.append(pooled.reshape(-1).double().numpy())
    if len({r.size for r in rows}) > 1:
        raise UsageError("dimensionality: the volumes reduce to different grids; give volumes of one shape")
    return np.stack(rows) if rows else np.zeros((0, 0))


def spectrum(x: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the sample covariance (ddof = 1) of the rows of ``x`` [n, d], n ≥ 2."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise UsageError(f"dimensionality: need at least 2 volumes, got {len(x)}")
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return s**2 / (len(x) - 1)


def summarise(eigenvalues: np.ndarray, n_voxels: int) -> dict[str, Any]:
    """The numbers of the module docstring from one set's eigenvalues."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = float(lam.sum())
    if total <= 0:  # every volume identical: no direction of variation
        return {"participation_ratio": 0.0, "components_90": 0, "first_share": float("nan"),
                "total_variance": 0.0, "cumulative": []}
    share = np.cumsum(lam) / total
    return {
        "participation_ratio": total**2 / float((lam**2).sum()),
        "components_90": int(np.searchsorted(share, 0.9 - 1e-12) + 1),
        "first_share": float(lam[0] / total),
        "total_variance": total / n_voxels,
        "cumulative": [float(v) for v in share[:CUMULATIVE_KEEP]],
    }


def dimensionality(real: Sequence[np.ndarray], fake: Sequence[np.ndarray], grid: int = DEFAULT_GRID,
                   progress: bool = False) -> dict[str, Any]:
    """Spectrum summaries of two sets already of equal size: ``{"real": {...}, "fake": {...}, "grid": g}``."""
    if len(real) != len(fake):
        raise UsageError(f"dimensionality: compare sets of equal size (got {len(real)} real, {len(fake)} generated)")
    xr, xf = coarse_matrix(real, grid, progress, "real"), coarse_matrix(fake, grid, progress, "fake")
    if xr.shape[1] != xf.shape[1]:
        raise UsageError("dimensionality: real and generated volumes reduce to different grids; give one shape")
    g = round(xr.shape[1] ** (1 / 3))
    return {"real": summarise(spectrum(xr), xr.shape[1]), "fake": summarise(spectrum(xf), xf.shape[1]), "grid": g}


def save_spectrum_figure(result: dict[str, Any], path, *, dpi: int = 100) -> None:
    """Cumulative variance share against the number of components, real vs generated (written atomically)."""
    from pathlib import Path

    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    from medgen.core.fileio import atomic_path

    fig = Figure(figsize=(4.2, 3.0))
    ax = fig.subplots()
    for key, label in (("real", "real"), ("fake", "generated")):
        d = result[key]
        c = d["cumulative"]
        ax.plot(range(1, len(c) + 1), c, marker=".", label=f"{label}: PR {d['participation_ratio']:.2f}, "
                                                            f"90 % in {d['components_90']}")
    ax.axhline(0.9, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative share of variance")
    ax.set_title(f"variance directions ({result['grid']}³ block means)", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
