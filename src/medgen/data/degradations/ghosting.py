"""Discrete ghosts along the phase-encoding axis: the MRI artefact of periodic motion and pulsatile flow.

When the signal varies periodically while the phase-encoding lines are acquired (breathing, the heart
beat, pulsating blood or CSF), k-space is modulated periodically along the phase-encoding axis and faint
copies of the anatomy ("ghosts") appear displaced along that axis only. As TorchIO's ``Ghosting`` models
it: in the 3D k-space, every ``num_ghosts``-th plane across ``axis`` is multiplied by ``1 - intensity``
(``intensity=1`` zeroes them), which puts ``num_ghosts`` ghosts spaced ``N / num_ghosts`` voxels apart along
the axis; the central ``restore`` fraction of the planes is then put back to avoid extreme artefacts (with
fewer than two planes, only the central plane: TorchIO's ``restore=None``; so the mean intensity is always
kept), and the real part of the inverse transform is the degraded scan. The modulation depends on the
frequency along ``axis`` alone, so each line of voxels along the axis is filtered on its own: nothing moves
across the other axes. ``intensity=0`` or ``num_ghosts=0`` is the identity. Phase-encoding runs along ``y``
(anterior-posterior) by default, as in :mod:`.kspace`.

The k-space editing is TorchIO's deterministic ``Ghosting`` (Pérez-García et al. 2021) with the parameters
given here (the degradation draws nothing: ``RandomGhosting``'s ranges, 4–10 ghosts and intensity 0.5–1,
are ``num_ghosts=4:10 intensity=0.5:1``, drawn per subject by the framework). Values are clipped to [0, 1]:
the real part of the edited k-space rings below 0 and above the brightest tissue.

>>> import numpy as np
>>> from medgen.data.degradations import GHOSTING, Scan
>>> values = np.zeros((16, 16, 8)); values[6:10, 6:10, 2:6] = 0.8
>>> out = GHOSTING.apply(Scan(values, (1.0, 1.0, 1.0), "mri"), GHOSTING.params(axis="y"), np.random.default_rng(0))
>>> changed = np.abs(out["degraded"] - values) > 1e-6
>>> bool(changed.any()), bool(changed[:6].any() or changed[10:].any())  # ghosts along y only, none along x
(True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medgen.core.errors import UsageError
from medgen.data.degradations.degradation import Degradation, Scan, param

AXES = ("x", "y", "z")


@dataclass(frozen=True)
class GhostingParams:
    num_ghosts: int = param(6, "number of ghosts: every num_ghosts-th k-space plane across the axis is attenuated")
    axis: str = param("y", "phase-encoding axis, along which the ghosts lie: x, y or z")
    intensity: float = param(0.75, "artefact strength: the attenuated planes are multiplied by 1 - intensity (0: none)")
    restore: float = param(0.0, "fraction of k-space planes at the centre put back unchanged (below 2 planes: the central one)")

    def __post_init__(self) -> None:
        if self.num_ghosts < 0:
            raise UsageError(f"ghosting: num_ghosts={self.num_ghosts}: need ≥ 0")
        if self.axis not in AXES:
            raise UsageError(f"ghosting: axis={self.axis!r}: choose x, y or z")
        if not (math.isfinite(self.intensity) and self.intensity >= 0):
            raise UsageError(f"ghosting: intensity={self.intensity}: need ≥ 0")
        if not 0 <= self.restore <= 1:
            raise UsageError(f"ghosting: restore={self.restore}: need 0 ≤ restore ≤ 1")


def apply(scan: Scan, params: GhostingParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    import torch
    import torchio as tio

    axis = AXES.index(params.axis)
    planes = int(np.round(params.restore * scan.values.shape[axis]))
    restore = params.restore if planes // 2 > 0 else None  # TorchIO restores 2 × (planes // 2) central planes
    image = tio.ScalarImage(tensor=torch.from_numpy(np.asarray(scan.values, dtype=np.float32)[None].copy()),
                            affine=np.diag([*scan.spacing, 1.0]))
    ghosting = tio.Ghosting(num_ghosts=params.num_ghosts, axis=axis, intensity=params.intensity, restore=restore)
    degraded = ghosting(image).data[0].numpy().astype(np.float64)
    return {"degraded": np.clip(degraded, 0.0, 1.0)}


GHOSTING = Degradation(
    name="ghosting",
    summary="discrete ghosts along the phase-encoding axis from periodic k-space modulation (ghost removal)",
    params=GhostingParams,
    apply=apply,
    volumes={"degraded": ("intensity", "scan")},
    modalities=("mri",),
)
