"""The figure of an image-to-image result: input | output | target | error, in three planes.

One row per plane (axial, coronal, sagittal through the centre), one column per volume; the first
three share the [-1, 1] grey scale, the error map |output − target| its own (0 black). Extra columns
(e.g. a second baseline) may be given before the target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.core.fileio import atomic_path
from medgen.viz.mosaic import PLANES, plane_slice


def save_pair_figure(path: str | os.PathLike, columns: Sequence[tuple[str, np.ndarray]], target: np.ndarray,
                     title: str, error_of: int = -1, error_max: float = 0.5) -> Path:
    """``columns``: (title, volume) shown before the target; the error map is that of ``columns[error_of]``.

    Volumes are ``(x, y, z)`` in [-1, 1]; written atomically as PNG. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(columns) + [("target", target)]
    error = np.abs(np.asarray(columns[error_of][1], dtype=np.float64) - np.asarray(target, dtype=np.float64))
    ncols = len(shown) + 1
    fig, axes = plt.subplots(len(PLANES), ncols, figsize=(2.1 * ncols, 2.2 * len(PLANES)), squeeze=False)
    for r, plane in enumerate(PLANES):
        for c, (name, vol) in enumerate(shown):
            ax = axes[r][c]
            ax.imshow(plane_slice(vol, plane), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=8)
        ax = axes[r][-1]
        ax.imshow(plane_slice(error, plane), cmap="magma", vmin=0, vmax=error_max, interpolation="nearest")
        if r == 0:
            ax.set_title(f"|{columns[error_of][0]} − target|", fontsize=8)
        axes[r][0].set_ylabel(plane, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
