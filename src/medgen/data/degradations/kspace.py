"""Cartesian k-space undersampling with zero-filled reconstruction: the aliased input of MRI de-aliasing.

Faster MRI acquires fewer phase-encoding lines. As in fastMRI (Zbontar et al. 2018), each axial slice is
treated as a 2D acquisition: its centred 2D Fourier transform is the k-space, a column mask keeps a fully
sampled centre (``center_fraction`` of the lines) plus lines chosen at random or equispaced so that about
1/``acceleration`` of all lines remain, and the magnitude of the inverse transform of the masked k-space is
the zero-filled reconstruction: the same anatomy with coherent aliasing (random masks) or folded ghosts
(equispaced masks). Phase-encoding runs along ``axis`` (y, anterior-posterior, by default) and the same
mask serves every slice of a volume, as on a scanner. ``acceleration=1`` keeps every line: the identity.

The masks and the centred FFTs are MONAI's (``RandomKspaceMask``, ``EquispacedKspaceMask``,
``monai.data.fft_utils``), the fastMRI conventions; this module only arranges the volume as slices and
seeds MONAI's generator from the subject's.

>>> import numpy as np
>>> from medgen.data.degradations import KSPACE, Scan
>>> scan = Scan(np.random.default_rng(0).random((16, 16, 4)), (1.0, 1.0, 1.0), "mri")
>>> out = KSPACE.apply(scan, KSPACE.params(acceleration=1.0), np.random.default_rng(0))["degraded"]
>>> bool(np.abs(out - scan.values).max() < 1e-5)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param

PATTERNS = ("random", "equispaced")
AXES = ("y", "x")


@dataclass(frozen=True)
class KspaceParams:
    acceleration: float = param(4.0, "undersampling factor: about 1/acceleration of the phase-encoding lines are kept")
    center_fraction: float = param(0.08, "fraction of lines at the centre of k-space always kept (fastMRI: 0.08 at 4×, 0.04 at 8×)")
    pattern: str = param("random", "which other lines: random (fastMRI's random mask) or equispaced")
    axis: str = param("y", "phase-encoding direction within the axial slice: y (anterior-posterior) or x")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.acceleration) and self.acceleration >= 1):
            raise UsageError(f"kspace: acceleration={self.acceleration}: need ≥ 1")
        if not 0 <= self.center_fraction <= 1 / self.acceleration:
            raise UsageError(
                f"kspace: center_fraction={self.center_fraction}: need 0 ≤ center_fraction ≤ 1/acceleration "
                f"({1 / self.acceleration:.3g}), or the centre alone exceeds the lines kept"
            )
        if self.pattern not in PATTERNS:
            raise UsageError(f"kspace: pattern={self.pattern!r}: choose {' or '.join(PATTERNS)}")
        if self.axis not in AXES:
            raise UsageError(f"kspace: axis={self.axis!r}: choose {' or '.join(AXES)}")


def undersample(values: np.ndarray, params: KspaceParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-filled magnitude reconstruction of ``values`` (x, y, z) and the line mask (1 = acquired) along
    ``params.axis``; MONAI's mask generator is seeded with ``seed``."""
    import torch
    from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask
    from monai.data.fft_utils import fftn_centered

    volume = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    # Slices (z, coil, readout, phase): MONAI masks the last spatial dimension of complex k-space.
    slices = volume.permute(2, 0, 1) if params.axis == "y" else volume.permute(2, 1, 0)
    kspace = fftn_centered(slices[:, None], spatial_dims=2, is_complex=False)
    mask_cls = RandomKspaceMask if params.pattern == "random" else EquispacedKspaceMask
    masker = mask_cls(center_fractions=[params.center_fraction], accelerations=[params.acceleration],
                      spatial_dims=2, is_complex=True)
    masker.set_random_state(seed=seed)
    _, recon = masker(kspace)  # [z, readout, phase]: root-sum-of-squares over the one coil = magnitude
    recon = recon.permute(1, 2, 0) if params.axis == "y" else recon.permute(2, 1, 0)
    return recon.double().numpy(), masker.mask.flatten().numpy()


def apply(scan: Scan, params: KspaceParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    degraded, _ = undersample(scan.values, params, int(rng.integers(0, 2**31 - 1)))
    return {"degraded": degraded}


KSPACE = Degradation(
    name="kspace",
    summary="Cartesian k-space undersampling, zero-filled reconstruction (de-aliasing)",
    params=KspaceParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan")},
    modalities=("mri",),
)
