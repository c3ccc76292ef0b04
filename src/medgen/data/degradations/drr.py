"""Biplanar digitally reconstructed radiographs (DRRs): the two X-rays that X-ray→CT models take as input.

A radiograph records, per detector pixel, the attenuation along one ray: I/I₀ = exp(−∫μ dl). Models that
reconstruct a CT from two orthogonal radiographs (X2CT-GAN, Ying et al. 2019, CVPR) are trained on DRRs
rendered from CT scans, a posterior-anterior (PA) and a lateral view. Here the attenuation of each voxel is
μ = μ_water·(1 + HU/1000) (/mm; air, −1000 HU, and below → 0) and the rays are parallel to an axis of the
grid: along y for the PA view (an image over x, z) and along x for the lateral view (an image over y, z).
The line integral of a ray is then Σ μ·Δl over its voxels, Δl the spacing along the ray (mm): a
dimensionless optical depth (``transmission=False``), or the detector's normalised intensity exp(−Σ μ·Δl)
(``transmission=True``, 1 through air).

To keep every volume of a pair voxel-aligned, each radiograph is broadcast along its ray axis: every voxel
on a ray holds that ray's value (``drr_pa[x, :, z]`` is constant, as is ``drr_lateral[:, y, z]``).

Ray casters such as DiffDRR or Plastimatch (Siddon's algorithm) render cone-beam DRRs from a source point;
with parallel rays along a grid axis Siddon's sum reduces exactly to the sum along that axis, so no library
is needed. Not modelled: the cone-beam magnification of a real radiograph, scatter, beam hardening, and
quantum noise.

>>> import numpy as np
>>> from medgen.data.degradations import DRR, Scan
>>> hu = np.full((4, 4, 4), -1000.0)
>>> hu[1:3, 1:3, 1:3] = 0.0  # a 2-voxel water cube, 10 mm voxels: 20 mm of water on a ray through it
>>> out = DRR.apply(Scan(hu, (10.0, 10.0, 10.0), "ct"), DRR.params(), np.random.default_rng(0))
>>> out["drr_pa"][:, 0, 1].round(3)
array([0.   , 0.384, 0.384, 0.   ])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param
from medgen.data.degradations.lowdose import MU_WATER, attenuation

#: The ray axis of each view: PA along y (posterior → anterior), lateral along x.
VIEWS = {"drr_pa": 1, "drr_lateral": 0}


@dataclass(frozen=True)
class DrrParams:
    mu_water: float = param(MU_WATER, "attenuation of water at the beam's effective energy (0.0192: about 70 keV)", "/mm")
    transmission: bool = param(False, "False: line integrals Σ μ·Δl (optical depth); True: transmitted fraction "
                                      "exp(−Σ μ·Δl)")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu_water) and self.mu_water > 0):
            raise UsageError(f"drr: mu_water={self.mu_water}: need a positive attenuation in /mm")


def line_integrals(hu: np.ndarray, spacing: tuple[float, float, float], axis: int,
                   mu_water: float = MU_WATER) -> np.ndarray:
    """Σ μ·Δl of the parallel rays along ``axis`` of ``hu`` (x, y, z), Δl = ``spacing[axis]`` mm: a 2D image
    over the other two axes."""
    return attenuation(hu, mu_water).sum(axis=axis) * float(spacing[axis])


def radiographs(hu: np.ndarray, spacing: tuple[float, float, float], mu_water: float = MU_WATER,
                transmission: bool = False) -> dict[str, np.ndarray]:
    """The PA and lateral radiographs of ``hu``, each broadcast along its ray axis to the volume's shape."""
    out = {}
    for name, axis in VIEWS.items():
        image = line_integrals(hu, spacing, axis, mu_water)
        if transmission:
            image = np.exp(-image)
        out[name] = np.ascontiguousarray(np.broadcast_to(np.expand_dims(image, axis), hu.shape))
    return out


def apply(scan: Scan, params: DrrParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return radiographs(scan.values, scan.spacing, params.mu_water, params.transmission)


DRR = Degradation(
    name="drr",
    summary="biplanar radiographs (PA and lateral parallel-beam DRRs), broadcast along their rays (X-ray → CT)",
    params=DrrParams,
    apply=apply,
    volumes={"drr_pa": ("intensity", "as-is"), "drr_lateral": ("intensity", "as-is")},
    modalities=("ct",),
)
