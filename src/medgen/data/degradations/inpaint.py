"""Hidden regions to be filled in: the masked input of inpainting (lesion removal, artefact repair, anonymisation).

An inpainting model sees the scan with some regions hidden and a mask of where they are, and generates
the anatomy inside. The regions hide ``fraction`` of the body's voxels, the body being the voxels above
air or background (CT: above -500 HU, halfway between air and water; MRI: above 0.05); a scan without
any such voxel counts as all body. Two shapes:

- ``box``: axis-aligned boxes of ``size_mm`` per side (rounded to whole voxels along each axis, so an
  anisotropic scan gets boxes of the same size in mm), each placed uniformly at random inside the body's
  bounding box (shrunk to it where larger), added one by one until the hidden fraction is closest to
  ``fraction`` (within half a box; at least one box if ``fraction > 0``; at most as many boxes as cover
  the bounding box's volume ten times over);
- ``blobs``: smooth random shapes: white noise smoothed by a Gaussian of σ = ``size_mm`` / 4 (in mm, per
  axis), thresholded so that exactly ``round(fraction × body voxels)`` body voxels lie above it, kept within
  the body's bounding box. Blobs are then about ``size_mm`` across at small fractions and merge into
  larger shapes as the fraction grows.

Hidden voxels (``mask`` = 1, air included) are set to ``fill``: ``mean``, the mean of the visible body
voxels (the trivial baseline a model must beat), or ``value``, the constant ``fill_value`` in the scan's
units (HU or [0, 1]). Elsewhere the scan is unchanged.

MONAI's ``RandCoarseDropout`` draws a number of boxes sized in voxels, not a fraction of the body in mm,
and TorchIO has no masks of this kind, so the few lines of geometry are written here (scipy.ndimage for the
smoothing).

>>> import numpy as np
>>> from medgen.data.degradations import INPAINT, Scan
>>> values = np.full((20, 20, 20), 0.5)
>>> out = INPAINT.apply(Scan(values, (1.0, 1.0, 2.0), "mri"), INPAINT.params(size_mm=8.0, fraction=0.001),
...                     np.random.default_rng(0))
>>> [int(np.ptp(np.nonzero(out["mask"])[a])) + 1 for a in range(3)]  # one box: 8 × 8 × 4 voxels = 8 mm
[8, 8, 4]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param

SHAPES = ("box", "blobs")
FILLS = ("mean", "value")
#: Body voxels are those above this value: CT in HU (halfway between air and water), MRI in [0, 1].
BODY_THRESHOLD = {"ct": -500.0, "mri": 0.05}
#: Most boxes placed, in bounding boxes' worth of box volume (random boxes then cover all but e^-10 of it).
MAX_COVERAGE = 10


@dataclass(frozen=True)
class InpaintParams:
    shape: str = param("box", "hidden regions: box (cubes of size_mm) or blobs (smooth random shapes about size_mm across)")
    size_mm: float = param(40.0, "box side, or blob scale (Gaussian σ = size_mm / 4)", "mm")
    fraction: float = param(0.1, "fraction of the body's voxels hidden (body: CT > -500 HU, MRI > 0.05)")
    fill: str = param("mean", "hidden voxels: mean (of the visible body voxels) or value (fill_value)")
    fill_value: float = param(0.0, "the constant of fill=value, in the scan's units", "HU or [0, 1]")

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise UsageError(f"inpaint: shape={self.shape!r}: choose {' or '.join(SHAPES)}")
        if not (math.isfinite(self.size_mm) and self.size_mm > 0):
            raise UsageError(f"inpaint: size_mm={self.size_mm}: need > 0")
        if not 0 <= self.fraction < 1:
            raise UsageError(f"inpaint: fraction={self.fraction}: need 0 ≤ fraction < 1")
        if self.fill not in FILLS:
            raise UsageError(f"inpaint: fill={self.fill!r}: choose {' or '.join(FILLS)}")
        if not math.isfinite(self.fill_value):
            raise UsageError(f"inpaint: fill_value={self.fill_value}: need a finite number")


def body_mask(scan: Scan) -> np.ndarray:
    """The voxels above air or background (:data:`BODY_THRESHOLD`); all of them if none is."""
    body = scan.values > BODY_THRESHOLD[scan.modality]
    return body if body.any() else np.ones_like(body)


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and last index of ``mask``'s true voxels along each axis (inclusive)."""
    where = np.nonzero(mask)
    return np.array([w.min() for w in where]), np.array([w.max() for w in where])


def box_mask(body: np.ndarray, spacing, size_mm: float, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Random boxes of ``size_mm`` inside the body's bounding box hiding about ``fraction`` of the body."""
    mask = np.zeros(body.shape, dtype=bool)
    if fraction <= 0:
        return mask
    lo, hi = bounding_box(body)
    sides = np.clip(np.round(size_mm / np.asarray(spacing, dtype=np.float64)).astype(int), 1, hi - lo + 1)
    target = fraction * body.sum()
    covered = 0
    most = MAX_COVERAGE * math.ceil(np.prod(hi - lo + 1) / np.prod(sides)) + 1
    for count in range(most):
        if covered >= target:
            break
        start = [int(rng.integers(lo[a], hi[a] - sides[a] + 2)) for a in range(3)]
        region = tuple(slice(s, s + n) for s, n in zip(start, sides))
        new = int((body[region] & ~mask[region]).sum())
        if count > 0 and covered + new - target > target - covered:
            break  # closer to the target without this box
        mask[region] = True
        covered += new
    return mask


def blob_mask(body: np.ndarray, spacing, size_mm: float, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random blobs (thresholded smoothed noise) hiding ``round(fraction × body)`` body voxels."""
    from scipy import ndimage

    noise = rng.standard_normal(body.shape)
    hidden = int(round(fraction * body.sum()))
    if hidden == 0:
        return np.zeros(body.shape, dtype=bool)
    sigma = size_mm / 4 / np.asarray(spacing, dtype=np.float64)
    smooth = ndimage.gaussian_filter(noise, sigma=sigma, mode="reflect")
    inside = smooth[body]
    threshold = np.partition(inside, inside.size - hidden)[inside.size - hidden]
    lo, hi = bounding_box(body)
    in_box = np.zeros(body.shape, dtype=bool)
    in_box[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    return (smooth >= threshold) & in_box


def grid_masks(shape: tuple[int, ...], box: int, offset: int = 0) -> list[np.ndarray]:
    """The 8 masks of a 3D checkerboard of cubes of edge ``box`` voxels: cube ``(i, j, k)`` (voxels
    ``i·box − offset … (i+1)·box − 1 − offset`` along the first axis, and so on) belongs to mask
    ``4·(i mod 2) + 2·(j mod 2) + (k mod 2)``. Every voxel lies in exactly one mask, and every cube of a mask has
    its 26 neighbouring cubes visible: what mask-and-inpaint anomaly detection hides in turn (each voxel
    predicted from its context). ``offset`` (voxels) moves the grid's cube edges along every axis."""
    if box < 1:
        raise UsageError(f"grid box of {box} voxels: need >= 1")
    parity = [((np.arange(n) + int(offset)) // box) % 2 for n in shape]
    phase = 4 * parity[0][:, None, None] + 2 * parity[1][None, :, None] + parity[2][None, None, :]
    return [phase == p for p in range(8)]


def hide(scan: Scan, mask: np.ndarray, fill: str = "mean", fill_value: float = 0.0) -> dict[str, np.ndarray]:
    """``scan`` with the voxels of ``mask`` set to ``fill`` (``mean``: of the visible body voxels; ``value``:
    ``fill_value``): the ``degraded`` and ``mask`` volumes of this degradation for a given mask."""
    mask = np.asarray(mask, dtype=bool)
    if fill == "value":
        value = fill_value
    else:
        body = body_mask(scan)
        visible = body & ~mask
        value = float(scan.values[visible if visible.any() else body].mean())
    return {"degraded": np.where(mask, value, scan.values), "mask": mask.astype(np.uint8)}


def apply(scan: Scan, params: InpaintParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    make = box_mask if params.shape == "box" else blob_mask
    mask = make(body_mask(scan), scan.spacing, params.size_mm, params.fraction, rng)
    return hide(scan, mask, params.fill, params.fill_value)


INPAINT = Degradation(
    name="inpaint",
    summary="regions of the body hidden (boxes or smooth blobs) and a mask of them (inpainting)",
    params=InpaintParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan"), "mask": ("label", "as-is")},
)
