"""A truncated field of view: the cropped input of outpainting (FOV extension).

A scan reconstructed with a small field of view, or a patient larger than the scanner's, lacks the
anatomy outside a cylinder about the table axis (CT's truncation artefact; MRI's small-FOV acquisitions);
an outpainting model generates it. Here every axial slice keeps the voxels whose centres lie within
``fov_mm`` mm (the radius of the kept field of view, in the axial plane, with the scan's spacing) of the
cylinder's axis, which runs along z through the body's centre of mass in the axial plane (``centre=body``:
the mean position of the body voxels, CT > -500 HU, MRI > 0.05, as in :mod:`.inpaint`) or through the
volume's centre (``centre=volume``). Optionally only ``z_fraction`` of the slices are kept too: a slab of
``round(z_fraction × slices)`` slices centred on the same centre (shifted to stay inside the volume).
Everything else is set to the background (CT: -1000 HU, air, below the data set's window; MRI: 0) and
marked in ``mask`` (1 = to be generated). The degradation draws nothing.

TorchIO's ``Crop``/``CropOrPad`` and MONAI's ``SpatialCrop`` cut a box out of the array and change its shape;
a cylinder on the original grid is a few lines of geometry, written here.

>>> import numpy as np
>>> from medgen.data.degradations import OUTPAINT, Scan
>>> scan = Scan(np.full((5, 9, 2), 40.0), (10.0, 5.0, 5.0), "ct")  # x voxels of 10 mm, y of 5 mm
>>> out = OUTPAINT.apply(scan, OUTPAINT.params(fov_mm=20.0), np.random.default_rng(0))
>>> out["mask"][..., 0]
array([[1, 1, 1, 1, 0, 1, 1, 1, 1],
       [1, 0, 0, 0, 0, 0, 0, 0, 1],
       [0, 0, 0, 0, 0, 0, 0, 0, 0],
       [1, 0, 0, 0, 0, 0, 0, 0, 1],
       [1, 1, 1, 1, 0, 1, 1, 1, 1]], dtype=uint8)
>>> float(out["degraded"][0, 0, 0]), float(out["degraded"][2, 4, 0])
(-1000.0, 40.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param
from medgen.data.degradations.inpaint import body_mask

CENTRES = ("body", "volume")
#: The value outside the field of view: air for CT (HU), background for MRI.
BACKGROUND = {"ct": -1000.0, "mri": 0.0}


@dataclass(frozen=True)
class OutpaintParams:
    fov_mm: float = param(100.0, "radius of the kept field of view in the axial plane", "mm")
    centre: str = param("body", "axis of the kept cylinder: body (the body's centre of mass in x, y) or volume (the grid's centre)")
    z_fraction: float = param(1.0, "fraction of the axial slices kept, a centred slab (1: all)")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fov_mm) and self.fov_mm > 0):
            raise UsageError(f"outpaint: fov_mm={self.fov_mm}: need > 0")
        if self.centre not in CENTRES:
            raise UsageError(f"outpaint: centre={self.centre!r}: choose {' or '.join(CENTRES)}")
        if not 0 < self.z_fraction <= 1:
            raise UsageError(f"outpaint: z_fraction={self.z_fraction}: need 0 < z_fraction ≤ 1")


def fov_centre(scan: Scan, centre: str) -> np.ndarray:
    """The centre (x, y, z) in voxel index units: the body voxels' mean position, or the grid's centre."""
    if centre == "body":
        return np.array([w.mean() for w in np.nonzero(body_mask(scan))])
    return (np.array(scan.values.shape, dtype=np.float64) - 1) / 2


def kept_region(scan: Scan, params: OutpaintParams) -> np.ndarray:
    """True inside the kept field of view: the cylinder of radius ``fov_mm`` and the slab of slices."""
    nx, ny, nz = scan.values.shape
    cx, cy, cz = fov_centre(scan, params.centre)
    dx = (np.arange(nx) - cx) * scan.spacing[0]
    dy = (np.arange(ny) - cy) * scan.spacing[1]
    disc = dx[:, None] ** 2 + dy[None, :] ** 2 <= params.fov_mm ** 2
    kept = max(1, int(round(params.z_fraction * nz)))
    start = int(np.clip(round(cz - (kept - 1) / 2), 0, nz - kept))
    slab = np.zeros(nz, dtype=bool)
    slab[start:start + kept] = True
    return disc[:, :, None] & slab[None, None, :]


def apply(scan: Scan, params: OutpaintParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    kept = kept_region(scan, params)
    degraded = np.where(kept, scan.values, BACKGROUND[scan.modality])
    return {"degraded": degraded, "mask": (~kept).astype(np.uint8)}


OUTPAINT = Degradation(
    name="outpaint",
    summary="field of view truncated to a cylinder (and slab) about the body, and a mask of the rest (outpainting)",
    params=OutpaintParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan"), "mask": ("label", "as-is")},
)
