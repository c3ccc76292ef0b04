"""Ground-truth spatial correspondence of brain phantoms: displacement fields in mm, their
composition between subjects, and warping, for scoring registration.

Convention (a pull-back field, the way a phantom is sampled). Every ``brain-mri`` subject is the
MNI152 template sampled through a smooth map (:class:`SubjectMap`). For voxel v = (i, j, k) of a
subject whose NIfTI affine is ``A`` (:attr:`Phantom.affine`: RAS+ mm, diagonal spacing), let
x(v) = A · (i, j, k, 1) be its world position in mm. The template point its anatomy was sampled
from is

    q(v) = x(v) + u(v),    u = (disp_x, disp_y, disp_z) at v, in mm,

where q is in the template's own world coordinates: RAS+ mm of the MNI152 2009a symmetric
template as nilearn ships it (its NIfTI affine at 1 mm). The phantom's affine places its grid in
those same coordinates (the field of view centred at :data:`.brain_mri.FOV_CENTRE_MNI`), so
u = 0 everywhere would be the template itself (:func:`.brain_mri.template` renders it on any
grid) and u is the true displacement subject → template, sampled on the subject's voxel centres.
Analytically, with C = ``FOV_CENTRE_MNI``, p = x − C::

    q(x) = C + t + R · p / s + w · W(p)

(s the head-size scale, R a rotation of up to 5°, t a shift of up to 3 mm per axis, W three
unit-variance cubic B-spline fields with 40 mm knots, w their amplitude in mm;
:func:`.brain_mri.subject_map` gives them). Subject(x) = template(q(x)): to bring the template
onto a subject, sample the template at q (:func:`warp`).

Between two subjects (the true registration). The point of a ``moving`` subject M that
corresponds to voxel v of a ``fixed`` subject F is y(v) = q_M⁻¹(q_F(v)): both are sampled from
the same template point. :func:`true_displacement` returns d(v) = y(v) − x_F(v) on F's grid, in
mm, so that M warped onto F is M sampled at the world point x_F(v) + d(v) (:func:`warp`), the
pull-back displacement field (fixed → moving) that registration methods output. It needs only
the two written fields and affines: q_M⁻¹ is found by the fixed-point iteration
y ← q_F(v) − u_M(y), u_M linearly interpolated on M's grid; it converges since |∇u| < 1 (the
largest singular value of ∇u stays below about 0.6 over the field of view: rotation ≤ 5°, scale
±5 %, warp of a few mm over 40 mm knots). Outside M's grid u_M is continued
from its nearest voxel, so d is approximate where y falls outside M's field of view.

Atrophy is not a deformation. It is a change of tissue labels in template space (grey matter
within a depth of the outer brain surface becomes CSF; the ventricles' boundary moves outwards,
turning tissue into ventricular CSF), applied at q; the field carries the anatomy, not its
atrophy. So a longitudinal pair (baseline and follow-up) shares one field and the true
displacement between them is zero: their voxels correspond one to one, and the progression is
the change of the tissue maps.

``medgen preprocess`` does not carry the fields: ``phantoms.json`` records them under
``displacement``, not under ``volumes``, because an extra ``intensity`` volume is normalised
(MRI: its own percentiles mapped to [-1, 1], clipped), stored as float16 and padded with -1,
which destroys the millimetres. Resampling a displacement field is also not like resampling an
image: the values are vectors in world mm, so they keep their values when the voxel grid changes,
but they are tied to the world positions of the voxels (the affine), which preprocessing's
trimming, padding and cropping change without recording. Use the NIfTI files with their affine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medgen.data.phantoms.noise import LatticeField

#: The named volumes holding a brain phantom's displacement to the template: x, y and z components in mm.
DISPLACEMENT_VOLUMES = ("disp_x", "disp_y", "disp_z")
_CHUNK = 1 << 16  # points per batch when evaluating lattice fields at scattered points


@dataclass(frozen=True)
class SubjectMap:
    """The exact map from a brain subject's world coordinates to the template's (mm, RAS+).

    ``q = centre + shift + rotation · (x − centre) / scale + warp_mm · W(x − centre)`` with
    ``W`` the three :class:`LatticeField` s of ``warp`` (one per axis).
    """

    centre: np.ndarray
    rotation: np.ndarray
    scale: float
    shift: np.ndarray
    warp_mm: float
    warp: tuple[LatticeField, LatticeField, LatticeField]

    def _warp_at(self, p: np.ndarray) -> np.ndarray:
        out = np.empty_like(p)
        for start in range(0, len(p), _CHUNK):
            chunk = p[start : start + _CHUNK]
            for i in range(3):
                out[start : start + _CHUNK, i] = self.warp[i].at(chunk)
        return self.warp_mm * out

    def to_template(self, points: np.ndarray) -> np.ndarray:
        """Template points (N, 3) of subject world points ``points`` (N, 3), mm."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64)) - self.centre
        return self.centre + self.shift + (p / self.scale) @ self.rotation.T + self._warp_at(p)

    def from_template(self, points: np.ndarray, tol_mm: float = 1e-6, max_iter: int = 100) -> np.ndarray:
        """Subject world points (N, 3) whose template points are ``points`` (N, 3), mm (the inverse map).

        Fixed-point iteration ``p ← scale · Rᵀ (q − centre − shift − warp_mm · W(p))``; RuntimeError
        if it has not converged to ``tol_mm`` after ``max_iter`` steps.
        """
        q = np.atleast_2d(np.asarray(points, dtype=np.float64)) - self.centre - self.shift
        p = self.scale * q @ self.rotation
        for _ in range(max_iter):
            new = self.scale * (q - self._warp_at(p)) @ self.rotation
            step = float(np.abs(new - p).max(initial=0.0))
            p = new
            if step < tol_mm:
                return p + self.centre
        raise RuntimeError(f"inverse of the subject map did not converge to {tol_mm} mm in {max_iter} steps")


def world_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World positions (mm, float64) of the voxel centres of a grid: (3, X, Y, Z)."""
    idx = np.indices(tuple(shape)[:3], dtype=np.float64)
    aff = np.asarray(affine, dtype=np.float64)
    return np.einsum("ij,j...->i...", aff[:3, :3], idx) + aff[:3, 3].reshape(3, 1, 1, 1)


def field_of(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """(u, affine): a subject's displacement to the template, (3, X, Y, Z) float32 in mm, and its 4×4 affine.

    ``source``: a :class:`~medgen.data.phantoms.phantom.Phantom` generated with ``displacement=True``
    (volumes ``disp_x``, ``disp_y``, ``disp_z``), or a pair (field, affine) such as
    :func:`read_displacement` returns. ValueError for anything else.
    """
    if isinstance(source, tuple) and len(source) == 2:
        field, affine = source
    else:
        volumes = getattr(source, "volumes", None)
        if volumes is None or any(name not in volumes for name in DISPLACEMENT_VOLUMES):
            raise ValueError(
                "need a brain-mri phantom generated with displacement=True (volumes "
                f"{', '.join(DISPLACEMENT_VOLUMES)}) or a (field, affine) pair"
            )
        field = np.stack([volumes[name] for name in DISPLACEMENT_VOLUMES])
        affine = source.affine
    field = np.asarray(field, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    if field.ndim != 4 or field.shape[0] != 3 or affine.shape != (4, 4):
        raise ValueError(f"a displacement field is (3, X, Y, Z) with a 4x4 affine, got {field.shape} and "
                         f"{affine.shape}")
    return field, affine


def read_displacement(folder: str | os.PathLike, id: str) -> tuple[np.ndarray, np.ndarray]:
    """(u, affine) of subject ``id`` of a phantom set written with ``--displacement``, from
    ``folder/disp_x/<id>.nii.gz`` and the y and z files. ValueError if they are missing or misaligned."""
    import nibabel as nib

    parts, affine = [], None
    for name in DISPLACEMENT_VOLUMES:
        path = Path(folder) / name / f"{id}.nii.gz"
        if not path.is_file():
            raise ValueError(f"{path}: missing; was the set written with --displacement?")
        img = nib.load(str(path))
        if affine is not None and not np.allclose(img.affine, affine, atol=1e-4):
            raise ValueError(f"{path}: affine differs from {DISPLACEMENT_VOLUMES[0]}'s")
        affine = img.affine
        parts.append(np.asarray(img.dataobj, dtype=np.float32))
    return np.stack(parts), np.asarray(affine, dtype=np.float64)


def template_points(source: Any) -> np.ndarray:
    """q = x + u at every voxel of the subject: its template points, (3, X, Y, Z) float64, mm."""
    field, affine = field_of(source)
    return world_grid(field.shape[1:], affine) + field


def _to_voxels(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Fractional voxel indices (3, ...) of world points (3, ...)."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return np.einsum("ij,j...->i...", inv[:3, :3], points) + inv[:3, 3].reshape((3,) + (1,) * (points.ndim - 1))


def _interpolate(field: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.stack([ndi.map_coordinates(field[i], idx, order=1, mode="nearest", prefilter=False,
                                         output=np.float64) for i in range(3)])


def invert(source: Any, points: np.ndarray, tol_mm: float = 1e-4, max_iter: int = 100) -> np.ndarray:
    """World points y (3, ...) of a subject with template points ``points`` (3, ...): y + u(y) = points.

    Fixed-point iteration ``y ← points − u(y)`` with ``u`` linearly interpolated on the subject's grid
    (continued from the nearest voxel outside it); RuntimeError if it has not converged to ``tol_mm``.
    """
    field, affine = field_of(source)
    points = np.asarray(points, dtype=np.float64)
    y = points - _interpolate(field, _to_voxels(points, affine))
    for _ in range(max_iter):
        new = points - _interpolate(field, _to_voxels(y, affine))
        step = float(np.abs(new - y).max(initial=0.0))
        y = new
        if step < tol_mm:
            return y
    raise RuntimeError(f"inverse of the displacement field did not converge to {tol_mm} mm in {max_iter} steps")


def true_displacement(moving: Any, fixed: Any, tol_mm: float = 1e-4) -> np.ndarray:
    """The true displacement fixed → moving on the fixed subject's grid: (3, X, Y, Z) float32, mm.

    For voxel v of ``fixed`` (world position x), the corresponding point of ``moving`` (sampled from
    the same template point) is x + d(v): ``moving`` warped onto ``fixed`` is
    ``warp(moving_array, moving_affine, d, fixed_affine)``. Each subject is a Phantom generated with
    ``displacement=True`` or a (field, affine) pair (:func:`read_displacement`); see the module docstring.
    """
    fixed_field, fixed_affine = field_of(fixed)
    x = world_grid(fixed_field.shape[1:], fixed_affine)
    y = invert(moving, x + fixed_field, tol_mm=tol_mm)
    return (y - x).astype(np.float32)


def warp(
    array: np.ndarray,
    affine: np.ndarray,
    displacement: np.ndarray,
    target_affine: np.ndarray,
    order: int = 0,
    cval: float = 0.0,
) -> np.ndarray:
    """``array`` (on ``affine``) sampled at the world points x + d of a target grid: an array of the target's shape.

    ``displacement`` (3, X, Y, Z) in mm on the grid of ``target_affine``, e.g. :func:`true_displacement`
    (moving onto fixed) or a subject's own field ``u`` with the template as ``array`` (template onto
    subject). ``order`` 0 (nearest: label maps, dtype kept) or 1 (linear); ``cval`` outside ``array``.
    """
    displacement = np.asarray(displacement, dtype=np.float64)
    points = world_grid(displacement.shape[1:], target_affine) + displacement
    idx = _to_voxels(points, affine)
    out = ndi.map_coordinates(np.asarray(array), idx, order=order, mode="constant", cval=cval, prefilter=False)
    return out.astype(np.asarray(array).dtype) if order == 0 else out
