"""CT dose reduction: quantum noise inserted in the projection domain (the low-dose input of CT denoising).

A CT scan at a fraction ``dose`` of the full tube current sees ``dose`` times fewer photons per ray, and its
noise is that of the measured line integrals, reconstructed by filtered back-projection (FBP): streaky,
correlated and signal dependent (larger behind long or dense paths), unlike white image-domain noise. As in
the Low Dose CT Grand Challenge (McCollough et al. 2017), whose quarter-dose scans were simulated from the
full-dose projections by the method of Yu et al. (2012, J Comput Assist Tomogr 36:477), the noise that the
lower dose adds is inserted into the projections of the full-dose scan:

- each axial slice becomes attenuation μ = μ_water·(1 + HU/1000) (/mm, 0 in air and below) and its
  parallel-beam line integrals p = ∫μ dl over ``views`` angles in [0°, 180°) (one detector bin per pixel);
- the clean scan stands for a full-dose acquisition with ``photons`` incident photons per ray, whose line
  integrals have variance exp(p)/photons. A second, independent acquisition with N = photons·dose/(1 − dose)
  photons per ray is simulated: counts ~ Poisson(N·exp(−p)), p̂ = −log(counts/N) (a zero count is read as
  half a photon, the usual floor before the logarithm, which bounds p̂ at log 2N as in photon starvation),
  and its error p̂ − p is added to p. Variances add: exp(p)/photons + exp(p)/N = exp(p)/(photons·dose), the
  variance of a scan at ``dose``. ``dose = 1`` adds nothing and returns the scan unchanged;
- only the added noise is reconstructed (FBP with the ramp filter) and added to the clean slice, so the
  pair differs by the dose alone: FBP's own discretisation error (blur, streaks of a few views) never
  enters it. The logarithm's small positive bias at low counts, about exp(p)/(2N) in p, is kept, as on a
  scanner.

Yu et al. add Gaussian noise of this variance plus an electronic-noise term; the Poisson draw has the same
variance to first order and keeps the photon-starvation behaviour at very low counts; electronic noise is
not modelled. ``photons`` is per ray of one pixel's width and one slice's thickness: at the coarse voxels of
these data sets (several mm), a clinical flux per mm² would average the noise down to a few HU, so the
default (1e5, the usual full-dose flux of simulation studies) is chosen for the noise level of clinical scans
instead: on the 400 mm thorax phantom a quarter dose adds noise of about 30 HU (std in soft tissue, 32³ at
12.5 mm) to 40 HU (64³ at 6.25 mm), the size of the Grand Challenge's quarter-dose noise.

The projector and FBP are scikit-image's ``radon`` and ``iradon`` (CPU, exact enough at these sizes; ASTRA
or TIGRE would be faster but are not dependencies); the noise insertion is the few lines of Yu et al.'s
method written here, as no library offers it. Axial pixels are taken as squares of side √(dx·dy): in-plane
spacings differing by more than 5 % are refused (resample the data set first).

>>> import numpy as np
>>> from medgen.data.degradations import LOWDOSE, Scan
>>> water = Scan(np.zeros((16, 16, 2)), (8.0, 8.0, 8.0), "ct")
>>> out = LOWDOSE.apply(water, LOWDOSE.params(dose=1.0), np.random.default_rng(0))["degraded"]
>>> bool(np.array_equal(out, water.values))
True
>>> out = LOWDOSE.apply(water, LOWDOSE.params(dose=0.25), np.random.default_rng(0))["degraded"]
>>> 5 < float(out.std()) < 100
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param

#: Linear attenuation of water at about 70 keV (the effective energy of a 120 kVp beam), per mm.
MU_WATER = 0.0192
#: The largest relative difference of the two in-plane spacings treated as square pixels.
MAX_ANISOTROPY = 0.05
#: A zero photon count is read as this many photons before the logarithm.
ZERO_COUNT = 0.5


@dataclass(frozen=True)
class LowdoseParams:
    dose: float = param(0.25, "fraction of the full dose, 0 < dose ≤ 1 (1: the scan itself; the Grand Challenge: 0.25)")
    photons: float = param(1e5, "incident photons per ray (one pixel wide, one slice thick) and view at full dose", "photons")
    views: int = param(0, "projections over 180° (0: ⌈π/2 · the larger slice side⌉)")
    mu_water: float = param(MU_WATER, "attenuation of water at the beam's effective energy (0.0192: about 70 keV)", "/mm")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dose) and 0 < self.dose <= 1):
            raise UsageError(f"lowdose: dose={self.dose}: need 0 < dose ≤ 1")
        if not (math.isfinite(self.photons) and self.photons > 0):
            raise UsageError(f"lowdose: photons={self.photons}: need a positive number")
        if self.views != 0 and self.views < 2:
            raise UsageError(f"lowdose: views={self.views}: need ≥ 2, or 0 for automatic")
        if not (math.isfinite(self.mu_water) and self.mu_water > 0):
            raise UsageError(f"lowdose: mu_water={self.mu_water}: need a positive attenuation in /mm")


def attenuation(hu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Linear attenuation (/mm) of Hounsfield units: μ_water·(1 + HU/1000), 0 at and below −1000 HU."""
    return np.clip(mu_water * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0, None)


def pixel_size(spacing: Sequence[float]) -> float:
    """The side (mm) of the square axial pixels ``spacing`` (x, y[, z]) stands for; UsageError if the two
    in-plane spacings differ by more than :data:`MAX_ANISOTROPY`."""
    dx, dy = float(spacing[0]), float(spacing[1])
    if not (dx > 0 and dy > 0):
        raise UsageError(f"lowdose: spacing {dx} × {dy} mm: need positive sizes")
    if abs(dx - dy) > MAX_ANISOTROPY * max(dx, dy):
        raise UsageError(
            f"lowdose: axial pixels {dx:g} × {dy:g} mm are not square (> {MAX_ANISOTROPY:.0%} apart); "
            "resample the data set to isotropic in-plane spacing first"
        )
    return math.sqrt(dx * dy)


def projection_noise(
    hu: np.ndarray,
    pixel_mm: float,
    dose: float,
    photons: float,
    views: int,
    mu_water: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The noise (HU) that lowering one axial slice ``hu`` (x, y) from full dose to ``dose`` adds: Poisson
    noise of N = photons·dose/(1 − dose) photons per ray on its line integrals, reconstructed by FBP."""
    from skimage.transform import iradon, radon

    nx, ny = hu.shape
    n = max(nx, ny)
    # Square slice (air around a non-square one) so that radon's and iradon's centres coincide.
    before = ((n - nx) // 2, (n - ny) // 2)
    mu = np.zeros((n, n))
    mu[before[0]:before[0] + nx, before[1]:before[1] + ny] = attenuation(hu, mu_water)
    theta = np.linspace(0.0, 180.0, views or math.ceil(math.pi / 2 * n), endpoint=False)
    p = radon(mu, theta, circle=False) * pixel_mm  # line integrals, dimensionless
    n_photons = photons * dose / (1.0 - dose)
    counts = rng.poisson(n_photons * np.exp(-p)).astype(np.float64)
    noise = -np.log(np.maximum(counts, ZERO_COUNT) / n_photons) - p
    delta_mu = iradon(noise, theta, output_size=n, filter_name="ramp", circle=False) / pixel_mm
    return (delta_mu * (1000.0 / mu_water))[before[0]:before[0] + nx, before[1]:before[1] + ny]


def insert_projection_noise(
    hu: np.ndarray,
    spacing: Sequence[float],
    dose: float,
    photons: float = 1e5,
    views: int = 0,
    mu_water: float = MU_WATER,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """``hu`` (an axial slice (x, y) or a volume (x, y, z), Hounsfield units, in-plane ``spacing`` (x, y, ...)
    mm) as if scanned at ``dose`` of the full dose: projection-domain Poisson noise, slice by slice. ``dose = 1``
    returns a copy of ``hu``. All noise is drawn from ``rng``."""
    LowdoseParams(dose=dose, photons=photons, views=views, mu_water=mu_water)  # validates
    values = np.asarray(hu, dtype=np.float64)
    if values.ndim not in (2, 3):
        raise UsageError(f"lowdose: need an axial slice or a volume, got shape {values.shape}")
    if dose == 1:
        return values.copy()
    a = pixel_size(spacing)
    if values.ndim == 2:
        return values + projection_noise(values, a, dose, photons, views, mu_water, rng)
    out = values.copy()
    for k in range(values.shape[-1]):
        out[..., k] += projection_noise(values[..., k], a, dose, photons, views, mu_water, rng)
    return out


def apply(scan: Scan, params: LowdoseParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    degraded = insert_projection_noise(scan.values, scan.spacing, params.dose, params.photons, params.views,
                                       params.mu_water, rng=rng)
    return {"degraded": degraded}


LOWDOSE = Degradation(
    name="lowdose",
    summary="lower CT dose: Poisson noise inserted in the projections, reconstructed by FBP (denoising)",
    params=LowdoseParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan")},
    modalities=("ct",),
)
