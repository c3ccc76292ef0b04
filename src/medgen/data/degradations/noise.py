"""Image-domain noise: white Gaussian noise added to the voxels, or Rician noise for MRI magnitude images.

The simple comparison for projection-domain low-dose CT (:mod:`.lowdose`): noise of one standard deviation
``sigma`` everywhere, uncorrelated between voxels and independent of the anatomy, which real CT noise is not
(it is streaky and grows behind dense or long paths). For MRI it is the thermal noise of the receiver: the
real and imaginary channels carry independent Gaussian noise of the same ``sigma``, and a magnitude image is
|signal + n₁ + i·n₂|, Rician distributed (Gudbjartsson & Patz 1995, Magn Reson Med 34:910): on zero
signal (background) it is Rayleigh with mean sigma·√(π/2), on bright tissue nearly Gaussian. ``rician=True``
draws it that way (MRI only; a CT value in HU is not a magnitude).

TorchIO's ``RandomNoise`` and MONAI's ``RandGaussianNoise``/``RandRicianNoise`` do the same but draw from
generators of their own (MONAI also its standard deviation); the two lines here draw from the subject's.

>>> import numpy as np
>>> from medgen.data.degradations import NOISE, Scan
>>> scan = Scan(np.zeros((32, 32, 32)), (1.0, 1.0, 1.0), "ct")
>>> out = NOISE.apply(scan, NOISE.params(sigma=20.0), np.random.default_rng(0))["degraded"]
>>> round(float(out.std()))
20
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param

#: The standard deviation used when ``sigma`` is 0: HU for CT (about the noise a quarter dose adds, see
#: :mod:`.lowdose`), intensity in [0, 1] for MRI.
DEFAULT_SIGMA = {"ct": 30.0, "mri": 0.03}


@dataclass(frozen=True)
class NoiseParams:
    sigma: float = param(0.0, "standard deviation in the scan's units (CT: HU; MRI: intensity in [0, 1]); "
                              "0: the modality's default, 30 HU or 0.03")
    rician: bool = param(False, "MRI only: magnitude of the signal plus complex Gaussian noise (Rician) instead of "
                                "additive Gaussian noise")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise UsageError(f"noise: sigma={self.sigma}: need ≥ 0 (0: the modality's default)")


def add_noise(values: np.ndarray, sigma: float, rician: bool, rng: np.random.Generator) -> np.ndarray:
    """``values`` plus white Gaussian noise of standard deviation ``sigma``, or (``rician``) the magnitude
    |values + n₁ + i·n₂| with n₁, n₂ independent Gaussian of standard deviation ``sigma``."""
    values = np.asarray(values, dtype=np.float64)
    if not rician:
        return values + rng.normal(0.0, sigma, values.shape)
    return np.hypot(values + rng.normal(0.0, sigma, values.shape), rng.normal(0.0, sigma, values.shape))


def apply(scan: Scan, params: NoiseParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if params.rician and scan.modality != "mri":
        raise UsageError(f"noise: rician=True is for MRI magnitude images, not {scan.modality}")
    sigma = params.sigma or DEFAULT_SIGMA[scan.modality]
    return {"degraded": add_noise(scan.values, sigma, params.rician, rng)}


NOISE = Degradation(
    name="noise",
    summary="white Gaussian (or, for MRI, Rician) noise added in the image domain (denoising)",
    params=NoiseParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan")},
    modalities=("ct", "mri"),
)
