"""The classical baseline of learned registration: SimpleITK B-spline (or diffeomorphic demons) registration.

:class:`ClassicalRegistration` registers one (moving, fixed) pair by iterative optimisation, with no
training, and returns what a trained ``registration`` model's ``register`` returns (same keys, shapes and
convention, :mod:`medgen.metrics.registration`)::

    from medgen.inference.classical_registration import ClassicalRegistration

    out = ClassicalRegistration().register(moving, fixed)      # (X, Y, Z) arrays of one shape
    out["warped"], out["displacement"], out["jacobian"]        # [S,S,S], [3,S,S,S] voxels, [S,S,S]

Methods:

* ``bspline`` (default): a cubic B-spline transform with ``mesh_size`` control-grid cells per axis,
  optimised by L-BFGS-B (at most ``iterations`` per level; stops when the gradient's norm falls below
  ``gradient_tolerance``) over a multi-resolution image pyramid (``shrink_factors`` with Gaussian smoothing
  ``smoothing_sigmas`` in voxels), on mean squares (``metric="mse"``, for images in the same units) or
  Mattes mutual information (``"mattes"``, other contrasts). Seconds to tens of seconds for a 32³ pair
  on one thread.
* ``demons``: SimpleITK's diffeomorphic demons (a dense displacement field smoothed with a Gaussian of
  ``demons_sigma`` voxels per iteration), for images of the same contrast.

Deterministic: the metric samples every voxel (no random sampling), and the registration runs on
``threads`` threads (default 1: multithreaded sums may add in another order from run to run). The
images are registered in voxel space (spacing 1, origin 0, identity direction), like the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medgen.core.errors import UsageError
from medgen.inference.register import warp as warp_volume
from medgen.metrics.registration import jacobian_determinant

METHODS = ("bspline", "demons")
METRICS = ("mse", "mattes")


def _image(array: np.ndarray):
    """(X, Y, Z) array → SimpleITK image (ITK stores (z, y, x)); voxel space: spacing 1, origin 0."""
    import SimpleITK as sitk

    return sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(2, 1, 0)))


def _field_to_voxels(field) -> np.ndarray:
    """A SimpleITK displacement field image (z, y, x, 3) in voxel-space physical units → ``[3, X, Y, Z]``."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(field).astype(np.float64)  # (Z, Y, X, 3); component 0 along x = array axis 0
    return np.ascontiguousarray(arr.transpose(3, 2, 1, 0))


@dataclass
class ClassicalRegistration:
    """SimpleITK registration of one pair (module docstring). ``preprocess``: None (scans given to
    ``medgen register classical`` are normalised by their own percentiles)."""

    method: str = "bspline"
    mesh_size: int = 4
    shrink_factors: tuple[int, ...] = (2, 1)
    smoothing_sigmas: tuple[float, ...] = (1.0, 0.0)
    iterations: int = 100
    gradient_tolerance: float = 1e-6
    metric: str = "mse"
    demons_sigma: float = 1.5
    threads: int = 1
    preprocess: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"classical registration method {self.method!r}: choose {' or '.join(METHODS)}")
        if self.metric not in METRICS:
            raise UsageError(f"classical registration metric {self.metric!r}: choose {' or '.join(METRICS)}")
        if self.mesh_size < 1 or self.iterations < 1 or self.threads < 1:
            raise UsageError(f"mesh_size {self.mesh_size}, iterations {self.iterations}, threads {self.threads}: need ≥ 1")
        if len(self.shrink_factors) != len(self.smoothing_sigmas) or not self.shrink_factors:
            raise UsageError("shrink_factors and smoothing_sigmas: one of each per level")

    def register(self, moving: Any, fixed: Any) -> dict[str, np.ndarray]:
        """``{"warped": (X, Y, Z), "displacement": [3, X, Y, Z] voxels, "jacobian": (X, Y, Z)}`` (float32) of
        ``moving`` registered to ``fixed`` (two arrays of one shape): ``warped(p) = moving(p + u(p))``."""
        m, f = np.asarray(moving, dtype=np.float32), np.asarray(fixed, dtype=np.float32)
        if m.ndim != 3 or m.shape != f.shape:
            raise UsageError(f"register: two (X, Y, Z) volumes of one shape; got {m.shape} and {f.shape}")
        if min(f.shape) < 4:
            raise UsageError(f"register: volumes of shape {f.shape} are too small (need ≥ 4 voxels per axis)")
        u = self._bspline(m, f) if self.method == "bspline" else self._demons(m, f)
        return {"warped": self.warp(m, u), "displacement": u.astype(np.float32),
                "jacobian": jacobian_determinant(u).astype(np.float32)}

    def warp(self, volume: Any, displacement: Any, mode: str = "bilinear") -> np.ndarray:
        """``volume`` resampled at ``p + u(p)`` (:func:`medgen.inference.register.warp`)."""
        return warp_volume(volume, displacement, mode)

    def _bspline(self, moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        import SimpleITK as sitk

        f_img, m_img = _image(fixed), _image(moving)
        tx = sitk.BSplineTransformInitializer(f_img, [self.mesh_size] * 3, 3)
        reg = sitk.ImageRegistrationMethod()
        if self.metric == "mse":
            reg.SetMetricAsMeanSquares()
        else:
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.NONE)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=self.gradient_tolerance,
                                 numberOfIterations=self.iterations, maximumNumberOfCorrections=5,
                                 maximumNumberOfFunctionEvaluations=4 * self.iterations,
                                 costFunctionConvergenceFactor=1e7)
        reg.SetInitialTransform(tx, inPlace=True)
        reg.SetShrinkFactorsPerLevel(list(self.shrink_factors))
        reg.SetSmoothingSigmasPerLevel(list(self.smoothing_sigmas))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetNumberOfThreads(self.threads)
        out = reg.Execute(f_img, m_img)
        conv = sitk.TransformToDisplacementFieldFilter()
        conv.SetReferenceImage(f_img)
        conv.SetOutputPixelType(sitk.sitkVectorFloat64)
        conv.SetNumberOfThreads(self.threads)
        return _field_to_voxels(conv.Execute(out))

    def _demons(self, moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        import SimpleITK as sitk

        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        demons.SetNumberOfIterations(self.iterations)
        demons.SetSmoothDisplacementField(True)
        demons.SetStandardDeviations(float(self.demons_sigma))
        demons.SetNumberOfThreads(self.threads)
        field = demons.Execute(_image(fixed), _image(moving))
        return _field_to_voxels(field)
