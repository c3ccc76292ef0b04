"""Through-plane resolution loss: fewer, or thicker, axial slices (the "remove slices, increase the gap" pairs).

A clinical scan is often acquired with thick or widely spaced axial slices; a super-resolution model learns
to restore thin slices. The pair is "safely assumed": keep every ``factor``-th slice of a thin-slice scan
(``mode=skip``, a gap) or average each slab of ``factor`` slices (``mode=thick``, the partial-volume effect
of a thick slice), then bring the result back to the original grid (``upsample``: ``nearest`` repeats each
kept slice, ``linear`` interpolates between them) so that input and target are voxel-aligned. The
upsampled input is also the trivial baseline (nearest / linear interpolation) a model must beat.

Neither TorchIO's ``RandomAnisotropy`` (which resamples to a coarser grid and back with one interpolator) nor
MONAI offers slice skipping with a chosen phase and thick-slab averaging on the original grid, so this
is written here (a few lines of index arithmetic).

>>> import numpy as np
>>> from medgen.data.degradations import Scan, SLICES
>>> scan = Scan(np.arange(8.0)[None, None, :].repeat(2, 0).repeat(2, 1), (1.0, 1.0, 1.0), "ct")
>>> SLICES.apply(scan, SLICES.params(factor=4), np.random.default_rng(0))["degraded"][0, 0]
array([0., 0., 0., 4., 4., 4., 4., 4.])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param

MODES = ("skip", "thick")
UPSAMPLING = ("nearest", "linear")


@dataclass(frozen=True)
class SliceParams:
    factor: int = param(4, "keep every factor-th axial slice: the new slice spacing is factor × the scan's")
    spacing_mm: float = param(0.0, "the new slice spacing instead of factor (rounded to whole slices; 0: use factor)", "mm")
    mode: str = param("skip", "skip: single thin slices with a gap; thick: each slice the mean of its slab")
    offset: int = param(0, "index of the first kept slice (skip) or slab start (thick), 0 ≤ offset < factor")
    upsample: str = param("nearest", "back to the scan's grid: nearest or linear")

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise UsageError(f"slices: factor={self.factor}: need ≥ 1")
        if self.spacing_mm < 0 or not math.isfinite(self.spacing_mm):
            raise UsageError(f"slices: spacing_mm={self.spacing_mm}: need ≥ 0")
        if self.mode not in MODES:
            raise UsageError(f"slices: mode={self.mode!r}: choose {' or '.join(MODES)}")
        if self.upsample not in UPSAMPLING:
            raise UsageError(f"slices: upsample={self.upsample!r}: choose {' or '.join(UPSAMPLING)}")

    def factor_for(self, slice_spacing_mm: float) -> int:
        """The number of the scan's slices per new slice."""
        if self.spacing_mm > 0:
            return max(1, round(self.spacing_mm / slice_spacing_mm))
        return self.factor


def reduce_slices(values: np.ndarray, factor: int, mode: str = "skip", offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The low-resolution stack and where its slices lie: ``(slices [x, y, n], positions [n])`` with positions in
    units of the input's slice index (a kept slice's index; a thick slab's centre)."""
    depth = values.shape[-1]
    if not 0 <= offset < max(factor, 1) or offset >= depth:
        raise UsageError(f"slices: offset={offset}: need 0 ≤ offset < min(factor={factor}, {depth} slices)")
    starts = np.arange(offset, depth, factor)
    if mode == "skip":
        return values[..., starts], starts.astype(np.float64)
    stacks = [values[..., s:min(s + factor, depth)].mean(axis=-1) for s in starts]
    centres = np.array([(s + min(s + factor, depth) - 1) / 2 for s in starts])
    return np.stack(stacks, axis=-1), centres


def upsample_slices(slices: np.ndarray, positions: np.ndarray, depth: int, mode: str = "nearest") -> np.ndarray:
    """Back to ``depth`` slices: each output slice from the nearest stored slice (ties go to the lower one), or
    linearly interpolated between the two around it (constant beyond the first and last)."""
    z = np.arange(depth, dtype=np.float64)
    if mode == "nearest":
        nearest = np.abs(z[:, None] - positions[None, :]).argmin(axis=1)
        return slices[..., nearest]
    upper = np.clip(np.searchsorted(positions, z, side="right"), 1, len(positions) - 1) if len(positions) > 1 else None
    if upper is None:
        return np.repeat(slices, depth, axis=-1)
    lower = upper - 1
    w = np.clip((z - positions[lower]) / (positions[upper] - positions[lower]), 0.0, 1.0)
    return slices[..., lower] * (1 - w) + slices[..., upper] * w


def apply(scan: Scan, params: SliceParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    factor = params.factor_for(scan.spacing[2])
    low, positions = reduce_slices(scan.values, factor, params.mode, params.offset)
    return {"degraded": upsample_slices(low, positions, scan.values.shape[-1], params.upsample)}


SLICES = Degradation(
    name="slices",
    summary="fewer or thicker axial slices, brought back to the grid (through-plane super-resolution)",
    params=SliceParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan")},
)
