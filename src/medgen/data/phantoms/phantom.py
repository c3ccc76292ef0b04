"""The :class:`Phantom` record returned by every phantom generator."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Phantom:
    """One synthetic volume with its ground truth.

    ``array`` is float32 of shape (X, Y, Z) (S³ by default), indexed (x, y, z) in RAS+
    (x left→right, y posterior→anterior, z inferior→superior): Hounsfield units for CT,
    arbitrary T1-like units ≥ 0 for MRI. ``spacing`` is the voxel size in mm per axis.
    ``factors`` holds the ground truth (volumes in ml, percentages, ``label``).
    ``masks`` holds boolean tissue masks of the same shape (e.g. ``lung``, ``bone``).
    ``volumes`` holds further voxel-aligned volumes of the same subject: ``tissue``
    (int16 label map, classes in the kind's module ``TISSUE_CLASSES``) and, for brain
    MRI, ``t2`` (a T2-weighted contrast, float32).
    ``origin`` is the world position (mm) of voxel (0, 0, 0); by default the
    volume is centred on the world origin.
    ``noise_free`` is ``array`` before the scanner's noise (float32, same units, not
    rounded), where the generator has one (thorax CT): other scanners render the
    subject from it (see :mod:`medgen.data.phantoms.domains`).
    """

    kind: str
    array: np.ndarray
    spacing: tuple[float, float, float]
    factors: dict[str, float | int | str]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    volumes: dict[str, np.ndarray] = field(default_factory=dict)
    origin: tuple[float, float, float] | None = None
    noise_free: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.origin is None:
            shape = np.asarray(self.array.shape[:3], dtype=np.float64)
            self.origin = tuple(float(v) for v in -0.5 * (shape - 1) * np.asarray(self.spacing))

    @property
    def affine(self) -> np.ndarray:
        """4×4 voxel-to-RAS+ (mm) affine: diagonal spacing, translation ``origin``."""
        aff = np.diag([*self.spacing, 1.0]).astype(np.float64)
        aff[:3, 3] = self.origin
        return aff
