"""A smooth multiplicative bias field: the intensity inhomogeneity of MRI (bias-field correction).

The receive coils' uneven sensitivity and the inhomogeneous RF field make the same tissue brighter in one
part of an MR image than in another, by a factor that varies slowly across the field of view. As in Van
Leemput et al. 1999 (automated model-based tissue classification of MR images of the brain) and Sudre et
al. 2017, the field is the exponential of a polynomial of total degree ``order`` in the voxel coordinates,
each axis scaled to [-1, 1] across the volume (so the field spans the field of view whatever the
spacing): ``degraded = scan × exp(Σ c_ijk x^i y^j z^k)`` over ``i + j + k ≤ order``, each coefficient drawn
uniformly in ``[-coefficients, coefficients]``. ``coefficients=0`` is the identity.

The field is TorchIO's deterministic ``BiasField`` (Pérez-García et al. 2021); its coefficients are drawn
here from the subject's generator in ``RandomBiasField``'s order (x power outermost, z innermost), so a pair
does not depend on torch's global generator. TorchIO does not normalise the field, so it can brighten a
region beyond the data set's range: values above 1 are clipped to 1 (saturation, as a fixed display
window would show it); values stay ≥ 0 since the field is positive.

>>> import numpy as np
>>> from medgen.data.degradations import BIAS, Scan
>>> values = np.full((8, 8, 8), 0.2)
>>> out = BIAS.apply(Scan(values, (1.0, 1.0, 1.0), "mri"), BIAS.params(coefficients=0.2, order=1), np.random.default_rng(0))
>>> ratio = out["degraded"] / values
>>> bool(ratio.min() > 0), bool(np.ptp(ratio) > 0.05)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param


@dataclass(frozen=True)
class BiasParams:
    coefficients: float = param(0.5, "largest magnitude of the log-field's polynomial coefficients (each uniform in ±coefficients)")
    order: int = param(3, "total degree of the log-field's polynomial in x, y, z (higher: less smooth)")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.coefficients) and self.coefficients >= 0):
            raise UsageError(f"bias: coefficients={self.coefficients}: need ≥ 0")
        if self.order < 0:
            raise UsageError(f"bias: order={self.order}: need ≥ 0")


def num_coefficients(order: int) -> int:
    """The number of monomials x^i y^j z^k with i + j + k ≤ order."""
    return (order + 1) * (order + 2) * (order + 3) // 6


def draw_coefficients(params: BiasParams, rng: np.random.Generator) -> np.ndarray:
    """The polynomial's coefficients as ``RandomBiasField`` draws them (uniform in ±coefficients)."""
    return rng.uniform(-params.coefficients, params.coefficients, size=num_coefficients(params.order))


def apply(scan: Scan, params: BiasParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    import torch
    import torchio as tio

    coefficients = draw_coefficients(params, rng)
    image = tio.ScalarImage(tensor=torch.from_numpy(np.asarray(scan.values, dtype=np.float32)[None].copy()),
                            affine=np.diag([*scan.spacing, 1.0]))
    biased = tio.BiasField(coefficients=coefficients.tolist(), order=params.order)(image)
    return {"degraded": np.clip(biased.data[0].numpy().astype(np.float64), 0.0, 1.0)}


BIAS = Degradation(
    name="bias",
    summary="smooth multiplicative bias field, exp of a polynomial (bias-field correction)",
    params=BiasParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan")},
    modalities=("mri",),
)
