"""Three-plane mosaics of 3D volumes: one row per volume, one column per plane.

Display convention (radiological, as on a PACS viewer), for arrays indexed
(x, y, z) in RAS+:

* axial (``vol[:, :, k]``): anterior at the top, the patient's right on the left;
* coronal (``vol[:, j, :]``): superior at the top, the patient's right on the left;
* sagittal (``vol[i, :, :]``): superior at the top, anterior on the left.

Example::

    from medgen.viz.mosaic import save_mosaic
    save_mosaic([ct1, ct2], "ct.png", titles=["a", "b"], vmin=-1000, vmax=300)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.core.fileio import atomic_path

PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def plane_slice(volume: np.ndarray, plane: str, index: int | None = None) -> np.ndarray:
    """One slice of ``volume`` (x, y, z) oriented for display (row 0 at the top).

    ``index`` is the slice index along the plane's normal axis (default: the
    central slice, ``n // 2``).
    """
    if plane not in _AXIS:
        raise ValueError(f"unknown plane {plane!r}; choose from {', '.join(PLANES)}")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    axis = _AXIS[plane]
    n = volume.shape[axis]
    index = n // 2 if index is None else int(index)
    if not 0 <= index < n:
        raise ValueError(f"slice index {index} out of range for {plane} axis of length {n}")
    sl = np.take(volume, index, axis=axis)  # 2D, (first remaining axis, second remaining axis)
    # rot90 puts the second axis (y or z, increasing) upwards; fliplr puts
    # x (right) or y (anterior) on the viewer's left.
    return np.fliplr(np.rot90(sl))


def _window(panels: list[np.ndarray], vmin: float | None, vmax: float | None) -> tuple[float, float]:
    values = np.concatenate([p.ravel() for p in panels]).astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo = float(np.percentile(finite, 0.5)) if vmin is None else float(vmin)
    hi = float(np.percentile(finite, 99.5)) if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def mosaic_array(
    volumes: Sequence[np.ndarray],
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    planes: Sequence[str] = PLANES,
    slice_index: int | Sequence[int | None] | None = None,
    gap: int = 2,
) -> np.ndarray:
    """Tile the central (or chosen) slices into one grey image in [0, 1] (float32).

    Rows are volumes, columns are ``planes``; panels are centred in cells of
    the largest panel size, separated by ``gap`` pixels of value 0. Grey levels
    map ``vmin``…``vmax`` (same units as the volume, e.g. HU) to 0…1; when
    either is None it is taken per volume from the 0.5th / 99.5th percentile
    of that volume's shown slices. ``slice_index`` is one index for every
    plane or one per plane (None = central).
    """
    if len(volumes) == 0:
        raise ValueError("no volumes to show")
    planes = tuple(planes)
    if isinstance(slice_index, (int, np.integer)) or slice_index is None:
        indices = [slice_index] * len(planes)
    else:
        indices = list(slice_index)
        if len(indices) != len(planes):
            raise ValueError("slice_index needs one entry per plane")
    rows = []
    for vol in volumes:
        panels = [plane_slice(vol, p, i) for p, i in zip(planes, indices)]
        lo, hi = _window(panels, vmin, vmax)
        rows.append([np.clip((p.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0) for p in panels])
    ph = max(p.shape[0] for row in rows for p in row)
    pw = max(p.shape[1] for row in rows for p in row)
    out = np.zeros((len(rows) * (ph + gap) - gap, len(planes) * (pw + gap) - gap), dtype=np.float32)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top = r * (ph + gap) + (ph - panel.shape[0]) // 2
            left = c * (pw + gap) + (pw - panel.shape[1]) // 2
            out[top : top + panel.shape[0], left : left + panel.shape[1]] = np.nan_to_num(panel)
    return out


def save_mosaic(
    volumes: Sequence[np.ndarray],
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    planes: Sequence[str] = PLANES,
    slice_index: int | Sequence[int | None] | None = None,
    dpi: int = 100,
    min_panel_px: int = 256,
) -> None:
    """Write a PNG mosaic of ``volumes`` (see :func:`mosaic_array`) atomically.

    Each panel is enlarged by an integer factor (nearest neighbour) to at least
    ``min_panel_px`` pixels, so the PNG is exactly the mosaic scaled by that
    factor; ``titles`` (one per volume) and plane names are drawn inside the
    top-left corner of the panels, leaving the image geometry unchanged.
    """
    # Figure + Agg canvas directly: no pyplot state, no change of the global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    planes = tuple(planes)
    gap = 2
    img = mosaic_array(volumes, vmin=vmin, vmax=vmax, planes=planes, slice_index=slice_index, gap=gap)
    n_rows, n_cols = len(volumes), len(planes)
    ph = (img.shape[0] + gap) // n_rows - gap
    pw = (img.shape[1] + gap) // n_cols - gap
    scale = max(1, math.ceil(min_panel_px / max(ph, pw)))
    img = np.kron(img, np.ones((scale, scale), dtype=np.float32))
    height, width = img.shape
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    fontsize = max(6.0, min(14.0, 0.045 * min(ph, pw) * scale * 72.0 / dpi))
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2.0, foreground="black")]  # readable on bright tissue
    style = dict(color="#ffd84d", fontsize=fontsize, va="top", ha="left", family="DejaVu Sans", path_effects=outline)
    for r in range(n_rows):
        for c, plane in enumerate(planes):
            x0 = (c * (pw + gap)) * scale + 4
            y0 = (r * (ph + gap)) * scale + 3
            label = plane if titles is None or c else f"{titles[r]}  {plane}"
            ax.text(x0, y0, label, **style)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


PHANTOM_MOSAIC_VOLUMES = 4


def save_phantom_set_mosaic(folder: str | os.PathLike, rows: list[dict], kind: str, n: int = PHANTOM_MOSAIC_VOLUMES) -> Path:
    """``folder/mosaic.png``: the first ``n`` volumes of a phantom set (manifest ``rows``) in three planes.

    Thorax CT in a lung window, with the sagittal plane through the left lung rather than the
    midline; brain MRI from 0 upwards.
    """
    import nibabel as nib

    folder = Path(folder)
    rows = rows[:n]
    volumes = [np.asarray(nib.load(str(folder / row["file"])).dataobj, dtype=np.float32) for row in rows]
    titles = [f"{row['id']} (label {row['label']})" for row in rows]
    path = folder / "mosaic.png"
    if kind == "thorax-ct":
        sagittal = int(0.36 * volumes[0].shape[0])
        save_mosaic(volumes, path, titles=titles, vmin=-1000.0, vmax=250.0, slice_index=[None, None, sagittal])
    else:
        save_mosaic(volumes, path, titles=titles, vmin=0.0)
    return path
