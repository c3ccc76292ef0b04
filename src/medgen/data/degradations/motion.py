"""Rigid patient motion during the acquisition: the ghosting and blurring of MRI motion artefacts.

An MRI volume is acquired in k-space, one segment of lines after another. If the patient moves between
segments, each segment samples the Fourier transform of a differently posed head, and the reconstruction
of the mixed k-space shows ghosts and blur along the phase-encoding direction rather than a moved copy.
As in Shaw et al. 2019 (MRI k-space motion artefact augmentation, MIDL), the scan is resampled at
``num_transforms`` rigid poses (rotations about the volume centre of up to ``degrees`` about each axis,
translations of up to ``translation`` mm along each), the 3D k-space is split into ``num_transforms + 1``
segments along its last axis (z) at the times of the movements, each segment is taken from one pose, and
the real part of the inverse transform is the degraded scan. The segment holding the centre of k-space
comes from the unmoved scan, so the anatomy stays in place and the mean intensity is kept.
``degrees=0`` and ``translation=0`` give the scan back.

The resampling and k-space mixing are TorchIO's deterministic ``Motion`` (Pérez-García et al. 2021); the
movements and times are drawn here from the subject's generator the way ``RandomMotion`` draws them
(each angle and shift uniform in ``[-max, max]``; times evenly spread over the acquisition, each moved by
up to 30 % of the interval), so a pair does not depend on torch's global generator. The scan is given to
TorchIO with its spacing, so mm and degrees are physical. Values are clipped to [0, 1]: the ringing of the
mixed k-space can leave small negative values or overshoot the brightest tissue.

>>> import numpy as np
>>> from medgen.data.degradations import MOTION, Scan
>>> values = np.zeros((16, 16, 16)); values[4:12, 5:11, 4:12] = 0.5
>>> out = MOTION.apply(Scan(values, (1.0, 1.0, 2.0), "mri"), MOTION.params(degrees=5.0), np.random.default_rng(0))
>>> bool(np.abs(out["degraded"] - values).max() > 0.05), bool(abs(out["degraded"].mean() - values.mean()) < 0.01)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param

#: TorchIO's names of SimpleITK's interpolators for intensity images.
INTERPOLATIONS = ("linear", "nearest", "bspline", "gaussian", "hamming", "cosine", "welch", "lanczos", "blackman")
#: How far each movement's time may move from its even spacing, as a fraction of the interval (RandomMotion's).
TIME_PERTURBATION = 0.3


@dataclass(frozen=True)
class MotionParams:
    degrees: float = param(10.0, "largest rotation of a movement about each axis (each angle uniform in ±degrees)", "degrees")
    translation: float = param(10.0, "largest shift of a movement along each axis (each uniform in ±translation)", "mm")
    num_transforms: int = param(2, "number of movements during the acquisition (k-space has one more segment)")
    interpolation: str = param("linear", f"resampling of the moved scans: {', '.join(INTERPOLATIONS)}")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.degrees) and self.degrees >= 0):
            raise UsageError(f"motion: degrees={self.degrees}: need ≥ 0")
        if not (math.isfinite(self.translation) and self.translation >= 0):
            raise UsageError(f"motion: translation={self.translation}: need ≥ 0")
        if self.num_transforms < 1:
            raise UsageError(f"motion: num_transforms={self.num_transforms}: need ≥ 1")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(f"motion: interpolation={self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")


def draw_movements(params: MotionParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The movements as ``RandomMotion`` draws them: ``(times [n], degrees [n, 3], translation [n, 3] mm)``,
    times in (0, 1) as fractions of the acquisition (of k-space along z)."""
    n = params.num_transforms
    degrees = rng.uniform(-params.degrees, params.degrees, size=(n, 3))
    translation = rng.uniform(-params.translation, params.translation, size=(n, 3))
    step = 1 / (n + 1)
    times = np.arange(1, n + 1) * step + rng.uniform(-step * TIME_PERTURBATION, step * TIME_PERTURBATION, size=n)
    return times, degrees, translation


def apply(scan: Scan, params: MotionParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    import torch
    import torchio as tio

    times, degrees, translation = draw_movements(params, rng)
    image = tio.ScalarImage(tensor=torch.from_numpy(np.asarray(scan.values, dtype=np.float32)[None].copy()),
                            affine=np.diag([*scan.spacing, 1.0]))
    motion = tio.Motion(degrees=degrees, translation=translation, times=times,
                        image_interpolation=params.interpolation)
    degraded = motion(image).data[0].numpy().astype(np.float64)
    return {"degraded": np.clip(degraded, 0.0, 1.0)}


MOTION = Degradation(
    name="motion",
    summary="rigid patient motion between k-space segments: ghosting and blur (motion correction)",
    params=MotionParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan")},
    modalities=("mri",),
)
