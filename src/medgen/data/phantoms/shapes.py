"""Geometry for phantoms: signed distances, partial-volume occupancy, tubes and trees.

All lengths are millimetres; signed distances are negative inside a shape.
Functions accept broadcastable coordinate arrays, so the same code evaluates a
shape on a whole voxel grid or at a handful of points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def occupancy(sdf: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Fraction of a voxel inside the shape (linear ramp one voxel wide across the surface)."""
    return np.clip(0.5 - sdf / voxel_mm, 0.0, 1.0).astype(np.float32)


def superellipse_sdf(
    u: np.ndarray, v: np.ndarray, a: float, b: float, p: float, radius: np.ndarray | float = 1.0
) -> np.ndarray:
    """Approximate signed distance (mm) to the superellipse ``|u/a|^p + |v/b|^p = radius^p``.

    ``u``, ``v`` are offsets from the centre in mm; ``radius`` (dimensionless,
    may vary with angle) scales the shape. The distance is first order
    (level-set value divided by its gradient): exact for circles, close to the
    surface otherwise, which is all that layering and partial volume need.
    """
    un = np.abs(u) / a + 1e-6
    vn = np.abs(v) / b + 1e-6
    f = (un**p + vn**p) ** (1.0 / p)
    fu = (un / f) ** (p - 1) / a
    fv = (vn / f) ** (p - 1) / b
    grad = np.sqrt(fu * fu + fv * fv)
    return (f - radius) / grad


def ellipsoid_sdf(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray, axes: np.ndarray, rotation: np.ndarray
) -> np.ndarray:
    """Approximate signed distance (mm) to a rotated ellipsoid.

    ``rotation`` (3×3) maps world offsets to the ellipsoid's own frame; ``axes``
    are its semi-axes in mm.
    """
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    q = [rotation[i, 0] * dx + rotation[i, 1] * dy + rotation[i, 2] * dz for i in range(3)]
    f = np.sqrt(sum((qi / ai) ** 2 for qi, ai in zip(q, axes)))
    grad = np.sqrt(sum((qi / ai**2) ** 2 for qi, ai in zip(q, axes))) / (f + 1e-9)
    return (f - 1.0) / (grad + 1e-9)


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (radians) about ``axis`` (Rodrigues' formula)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` voxels of ``spacing`` mm per axis, voxel centres symmetric about 0.

    Axis ``i`` of the array is world axis x, y or z (RAS+); voxels may be anisotropic.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along x, y and z (mm), float32."""
        return tuple(
            ((np.arange(n) - 0.5 * (n - 1)) * sp).astype(np.float32) for n, sp in zip(self.shape, self.spacing)
        )

    @property
    def xyz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open (broadcastable) coordinate arrays X (X,1,1), Y (1,Y,1), Z (1,1,Z)."""
        ax, ay, az = self.axes
        return ax[:, None, None], ay[None, :, None], az[None, None, :]

    @property
    def voxel_mm(self) -> float:
        """One length for a voxel (mm): the width of partial-volume ramps across surfaces.

        The spacing itself for isotropic voxels; for anisotropic ones the geometric mean
        (a surface's normal may point along any axis).
        """
        sx, sy, sz = self.spacing
        return sx if sx == sy == sz else float((sx * sy * sz) ** (1.0 / 3.0))

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in ml."""
        sx, sy, sz = self.spacing
        return sx**3 / 1000.0 if sx == sy == sz else sx * sy * sz / 1000.0

    def to_index(self, mm: np.ndarray) -> np.ndarray:
        """Fractional voxel index of points (..., 3) in mm."""
        sp, n = np.asarray(self.spacing), np.asarray(self.shape)
        return np.asarray(mm) / sp + 0.5 * (n - 1)

    def box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[slice, slice, slice]:
        """Index slices of the voxels whose centres lie in the box [lo_mm, hi_mm]."""
        n = np.asarray(self.shape)
        lo = np.clip(np.ceil(self.to_index(lo_mm)).astype(int), 0, n)
        hi = np.clip(np.floor(self.to_index(hi_mm)).astype(int) + 1, 0, n)
        return tuple(slice(int(a), int(max(a, b))) for a, b in zip(lo, hi))


def _tube_occupancy(x, y, z, seg: np.ndarray, sp: float) -> np.ndarray:
    """Occupancy of tube(s) ``seg`` (..., 8) at offsets x, y, z (mm) from each start point."""
    d = seg[..., 3:6] - seg[..., 0:3]
    dx, dy, dz = (d[..., i] for i in range(3))
    r0, r1 = seg[..., 6], seg[..., 7]
    length2 = dx * dx + dy * dy + dz * dz + 1e-12
    t = np.clip((x * dx + y * dy + z * dz) / length2, 0.0, 1.0)
    dist = np.sqrt((x - t * dx) ** 2 + (y - t * dy) ** 2 + (z - t * dz) ** 2)
    r = r0 + t * (r1 - r0)
    r_draw = np.maximum(r, 0.5 * sp)
    return np.clip((r_draw - dist) / sp + 0.5, 0.0, 1.0) * np.minimum(1.0, (2.0 * r / sp) ** 2)


def draw_tubes(occ: np.ndarray, grid: Grid, segments: np.ndarray, batch_vox: int = 8) -> None:
    """Max-combine the partial-volume occupancy of tapered tubes into ``occ`` (in place).

    ``segments`` is (N, 8): start x, y, z, end x, y, z (mm), start radius, end
    radius (mm). Each tube is evaluated only inside its bounding box; tubes
    whose box fits in ``batch_vox``³ voxels are evaluated together in one
    vectorised batch (vessel trees have thousands of them). Tubes thinner than
    a voxel are drawn half a voxel wide with proportionally lower occupancy,
    so small vessels fade out instead of vanishing or bloating.
    """
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 8)
    if len(segs) == 0:
        return
    sp, n = grid.voxel_mm, np.asarray(grid.shape)
    axes = [a.astype(np.float64) for a in grid.axes]
    reach = np.maximum(np.maximum(segs[:, 6], segs[:, 7]), 0.5 * sp)[:, None] + sp
    lo = np.floor(grid.to_index(np.minimum(segs[:, 0:3], segs[:, 3:6]) - reach)).astype(int)
    hi = np.ceil(grid.to_index(np.maximum(segs[:, 0:3], segs[:, 3:6]) + reach)).astype(int) + 1
    lo, hi = np.clip(lo, 0, n), np.clip(hi, 0, n)
    keep = np.all(hi > lo, axis=1)
    segs, lo, hi = segs[keep], lo[keep], hi[keep]
    k = np.minimum(batch_vox, n)
    small = np.all(hi - lo <= k, axis=1)
    if small.any():
        sg, lo_s = segs[small], np.minimum(lo[small], n - k)
        idx = [lo_s[:, i, None] + np.arange(k[i])[None, :] for i in range(3)]  # 3 × (N, k_i)
        c = [axes[i][idx[i]] - sg[:, i, None] for i in range(3)]
        x, y, z = c[0][:, :, None, None], c[1][:, None, :, None], c[2][:, None, None, :]
        o = _tube_occupancy(x, y, z, sg[:, None, None, None, :], sp)
        flat = (idx[0][:, :, None, None] * n[1] + idx[1][:, None, :, None]) * n[2] + idx[2][:, None, None, :]
        np.maximum.at(occ.reshape(-1), flat.ravel(), o.ravel().astype(occ.dtype))
    for seg, a, b in zip(segs[~small], lo[~small], hi[~small]):
        x = axes[0][a[0] : b[0], None, None] - seg[0]
        y = axes[1][None, a[1] : b[1], None] - seg[1]
        z = axes[2][None, None, a[2] : b[2]] - seg[2]
        view = occ[a[0] : b[0], a[1] : b[1], a[2] : b[2]]
        np.maximum(view, _tube_occupancy(x, y, z, seg, sp).astype(occ.dtype), out=view)


def polyline_segments(points: list[tuple[float, float, float]], radii: list[float]) -> np.ndarray:
    """Tube segments (N-1, 8) along a polyline with a radius at each vertex."""
    p = np.asarray(points, dtype=np.float64)
    r = np.asarray(radii, dtype=np.float64)
    return np.column_stack([p[:-1], p[1:], r[:-1], r[1:]])


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors perpendicular to each row of ``d``."""
    v = rng.standard_normal(d.shape)
    v -= (v * d).sum(axis=1, keepdims=True) * d
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)


def grow_tree(
    rng: np.random.Generator,
    roots: np.ndarray,
    inside: Callable[[np.ndarray], np.ndarray],
    generations: int,
    length_mm: float,
    radius_mm: float,
    length_ratio: float = 0.8,
    radius_ratio: float = 0.72,
    branch_angle_deg: tuple[float, float] = (20.0, 40.0),
) -> np.ndarray:
    """Grow random bifurcating trees (vessels or airways); return tube segments (N, 8).

    ``roots`` is (R, 6): start point (mm) and initial direction of each root
    branch. Each branch of generation g has length ``length_mm * length_ratio**g``
    and splits into two children turned by a random angle in
    ``branch_angle_deg`` to opposite sides of a random plane. A branch whose
    end would leave the organ (``inside(points) -> bool``) is shortened once
    and otherwise dropped with its subtree. Growth is vectorised per generation.
    """
    roots = np.asarray(roots, dtype=np.float64).reshape(-1, 6)
    start = roots[:, :3]
    direc = roots[:, 3:] / np.linalg.norm(roots[:, 3:], axis=1, keepdims=True)
    radius = np.full(len(roots), radius_mm)
    out = []
    for g in range(generations + 1):
        if len(start) == 0:
            break
        length = length_mm * length_ratio**g * rng.uniform(0.75, 1.25, len(start))
        end = start + direc * length[:, None]
        ok = inside(end) & inside(start + 0.5 * (end - start))
        short = ~ok
        if short.any():
            end[short] = start[short] + direc[short] * (0.5 * length[short])[:, None]
            ok[short] = inside(end[short])
        start, direc, radius, end = start[ok], direc[ok], radius[ok], end[ok]
        r_end = radius * (0.5 + 0.5 * radius_ratio)
        out.append(np.column_stack([start, end, radius, r_end]))
        if g == generations:
            break
        perp = _perpendicular(direc, rng)
        angles = np.deg2rad(rng.uniform(*branch_angle_deg, size=(len(start), 2)))
        children = []
        for side, ang, rscale in ((1.0, angles[:, 0], 1.0), (-1.0, angles[:, 1], 0.85)):
            new_dir = direc * np.cos(ang)[:, None] + side * perp * np.sin(ang)[:, None]
            new_dir += 0.15 * rng.standard_normal(new_dir.shape)
            new_dir /= np.linalg.norm(new_dir, axis=1, keepdims=True)
            children.append((end, new_dir, radius * radius_ratio * rscale))
        start = np.concatenate([c[0] for c in children])
        direc = np.concatenate([c[1] for c in children])
        radius = np.concatenate([c[2] for c in children])
    return np.concatenate(out) if out else np.zeros((0, 8))


def request_grid(
    size: int | Sequence[int], spacing: float | Sequence[float] | None, fov_mm: float
) -> Grid:
    """The voxel grid of a phantom request, centred on the anatomy's field of view.

    ``size``: S (an S³ cube) or the shape (X, Y, Z). ``spacing``: voxel size in mm, one
    value or one per axis; None: ``fov_mm`` over the largest axis (isotropic), so the
    largest axis spans the kind's standard field of view.
    """
    shape = tuple(int(v) for v in np.broadcast_to(np.asarray(size), (3,)))
    if spacing is None:
        spacing = fov_mm / max(shape)
    sp = tuple(float(v) for v in np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)))
    if min(shape) < 1 or not all(np.isfinite(v) and v > 0 for v in sp):
        raise ValueError(f"phantom grid {shape} at {sp} mm: need positive sizes and spacings")
    return Grid(shape, sp)
