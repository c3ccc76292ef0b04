"""Thorax CT phantom: a raw-like chest CT in Hounsfield units with known ground truth.

Anatomy, built analytically on a millimetre coordinate frame (x left→right,
y posterior→anterior, z inferior→superior, origin at the centre of a fixed
400 mm field of view):

* body contour: a jittered super-ellipse, 280–370 mm wide, with skin,
  subcutaneous fat (−100 HU) and chest-wall muscle (+45 HU);
* two lungs with lobulated surfaces, domed apices and diaphragm, parenchyma
  about −850 HU with texture and a gravity-dependent (posterior) density gradient;
* trachea and main bronchi (air tubes with soft-tissue walls) branching at the
  carina into small airway trees; pulmonary arteries and veins as tapering
  random trees from the hila; heart, aorta, pulmonary trunk, vena cava, oesophagus;
* spine (vertebral bodies with cortical shell and trabecular core, discs,
  canal, arches, spinous and transverse processes), 12 rib pairs with costal
  cartilage, sternum, scapulae, clavicles; liver below the right hemidiaphragm;
* emphysema: clusters of about −1000 HU (a smooth random field thresholded,
  weighted towards the upper lobes) whose extent varies per subject; the
  threshold is calibrated on the final image, so the measured emphysema % hits
  the subject's target (down to 48³; at 32³ partial volume caps it near 15 %);
* optional solid lung nodules (``nodules``), or optional lesions (``lesions``, see
  :mod:`.lesions`): lung nodules of 3–30 mm, bullae (focal emphysema near −985 HU,
  beyond the diffuse emphysema above) and a 30–60 mm soft-tissue mass in the lung or
  mediastinum, with a voxel instance map ``lesion`` and the lesion-free image ``normal``;
* a mild partial-volume blur and spatially correlated Gaussian noise whose level
  grows with body size, as on a real scanner.

Ground-truth factors are measured on the final noisy image inside the true
masks with the HU rules used by :mod:`medgen` evaluation: lung = lung-mask
voxels below −500 HU, emphysema % = share of those below −950 HU, bone =
voxels above +300 HU in the bone mask and its one-voxel partial-volume rim.
``label`` is the emphysema severity class (0: <5 %, 1: 5–10 %, 2: 10–20 %,
3: ≥20 %); over many seeds the classes are about equally frequent.

The ``tissue`` volume is a label map of the same grid (int16, :data:`TISSUE_CLASSES`):
each voxel gets the structure that covers at least half of it, in painting order,
then the ground-truth masks override (``bone`` and ``emphysema`` are exactly those
masks, and ``label > 0`` is exactly the body):

===  ==================================================================
0    background: air outside the body
1    soft tissue: muscle, skin, organs, liver, discs, cartilage, cord, airway walls
2    fat: subcutaneous, mediastinal, pericardial
3    lung parenchyma (with vessels thinner than half a voxel)
4    bone (the bone mask: voxels at least a quarter bone)
5    heart and vessels: heart, great vessels, pulmonary arteries and veins
6    airway lumen: air in the trachea and bronchi
7    emphysema: lung whose noise-free value is below −950 HU
8    lung nodule (only with ``nodules``)
===  ==================================================================

``lesions`` leave the factors, masks and ``tissue`` map as they are without them (the
subject's normal anatomy, e.g. a bulla does not change ``emphysema_pct`` or ``label``);
the lesions' ground truth is the ``lesion`` volume and the ``lesions`` factor.

The grid is ``size``³ voxels over the 400 mm field of view by default; any shape and
(anisotropic) spacing samples the same millimetre-defined anatomy, and partial-volume
ramps use the geometric mean of the spacing.

Breathing (``breathing``): the image is the subject at end-inspiration; ``expiration`` is the
same subject and scanner at end-expiration, made by a known smooth displacement field ``u``
(mm, world axes, on the image's grid; volumes ``breath_x``, ``breath_y``, ``breath_z``) in the
registration convention of :mod:`medgen.metrics.registration`::

    expiration(p) = inspiration(p + u(p)),    u(p) = c(z) · g(p) · (0, A · a(y), −D)

with D = ``breathing_cc_mm`` (uniform in :data:`BREATHING_CC_MM`, 10–20 mm) and A =
``breathing_ap_mm`` (uniform in :data:`BREATHING_AP_MM`, 2–6 mm) per subject. ``c`` rises
smoothly (C¹ smoothstep) from 0 at the lung apices to 1 at the top of the left hemidiaphragm
as it lies at expiration (D above its inspiration height) and stays 1 below: the diaphragm,
the lung bases and the abdomen under them rise cranially by D, the apices stay. ``a`` rises
from 0 at the spine to 1 at the front of the body: the anterior chest wall moves A posteriorly
(AP contraction). ``g`` is 0 in and within 5 mm of a region around the spine (vertebral
bodies, canal, arches, processes) and rises to 1 over the next 40 mm, so the spine stays rigid.
The field is one smooth map (no sliding of the lungs along the chest wall; ribs and wall deform
with it), without folding (det(I + ∇u) stays within about 0.9–1.3), and shrinks the lungs
(det > 1 in them: expiration's lungs are smaller, typically by 4–10 %). The generator paints partly on the voxel grid
(textures, tubes, blur), so it is not re-evaluated at p + u(p): the expiration scan is the
inspiration's noise-free image resampled at p + u(p) (linear interpolation;
``expiration_tissue`` nearest neighbour; points beyond the grid take the nearest border voxel),
plus noise of the same model drawn anew (:data:`BREATHING_STREAM`), rounded like the image.
Intensities move, they do not change: the denser parenchyma of a real expiration scan is not
modelled. Factor ``lung_volume_ml_expiration`` is measured like ``lung_volume_ml`` (the lung
mask resampled like ``expiration_tissue``, below −500 HU on ``expiration``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from medgen.data.phantoms import lesions as lesion_lib
from medgen.data.phantoms.noise import LatticeField, smooth_noise
from medgen.data.phantoms.phantom import Phantom
from medgen.data.phantoms.shapes import (
    draw_tubes,
    ellipsoid_sdf,
    grow_tree,
    occupancy,
    polyline_segments,
    request_grid,
    superellipse_sdf,
)

KIND = "thorax-ct"
FOV_MM = 400.0
#: Upper bounds (exclusive) of emphysema % for severity classes 0, 1, 2; ≥ the last is class 3.
SEVERITY_THRESHOLDS_PCT = (5.0, 10.0, 20.0)
LUNG_MAX_HU = -500.0
EMPHYSEMA_MAX_HU = -950.0
BONE_MIN_HU = 300.0
HU_MIN, HU_MAX = -1024.0, 3071.0
#: Partial-volume blur and noise correlation length: Gaussian sigma in voxels.
BLUR_SIGMA_VOX = 0.6
# The bone mask holds voxels at least 25 % bone (signed distance <= 0.25 voxel), so that
# blur lifts no voxel above +300 HU beyond its one-voxel (face-neighbour) rim.
_BONE_MASK_SDF = 0.25

#: Classes of the ``tissue`` label map: what each voxel mostly holds.
BACKGROUND, SOFT_TISSUE, FAT, LUNG, BONE, BLOOD, AIRWAY, EMPHYSEMA, NODULE = range(9)
TISSUE_CLASSES = {
    BACKGROUND: "background (air outside the body)",
    SOFT_TISSUE: "soft tissue (muscle, skin, organs, liver, discs, cartilage, spinal cord, airway walls)",
    FAT: "fat (subcutaneous, mediastinal, pericardial)",
    LUNG: "lung parenchyma (with vessels thinner than half a voxel)",
    BONE: "bone (the bone mask: voxels at least a quarter bone)",
    BLOOD: "heart and vessels (heart, great vessels, pulmonary arteries and veins)",
    AIRWAY: "airway lumen (air in the trachea and bronchi)",
    EMPHYSEMA: "emphysema (lung whose noise-free value is below -950 HU)",
    NODULE: "lung nodule (with --nodules only)",
}

#: Breathing: per-subject craniocaudal rise of the diaphragm and anteroposterior contraction of the
#: chest wall at end-expiration, drawn uniformly in these ranges (mm).
BREATHING_CC_MM = (10.0, 20.0)
BREATHING_AP_MM = (2.0, 6.0)
#: The region kept rigid around the spine: an (x, y) super-ellipse of these semi-axes (mm), centred
#: this far behind the vertebral bodies' centre line; the field is 0 up to the margin outside it and
#: reaches full strength over the ramp.
_SPINE_RIGID_AXES_MM = (42.0, 52.0)
_SPINE_RIGID_BACK_MM = 22.0
_SPINE_RIGID_MARGIN_MM = 5.0
_SPINE_RIGID_RAMP_MM = 40.0
#: Spawn key, under the volume's seed, of the expiration scan's draws: + (0,) the amplitudes, + (1,) its
#: noise, + (2,) its noise on domain B's scanner (the other streams: (0,)…(6,), domains' (100, 1),
#: lesions' (200,)).
BREATHING_STREAM = (400,)
#: Named volumes and factors a breathing phantom adds.
BREATHING_VOLUMES = ("expiration", "expiration_tissue")
BREATH_DISPLACEMENT_VOLUMES = ("breath_x", "breath_y", "breath_z")
BREATHING_FACTORS = ("breathing_cc_mm", "breathing_ap_mm", "lung_volume_ml_expiration")

# Piecewise-linear quantile function of the target emphysema % (uniform input):
# roughly a quarter of subjects fall in each severity class.
_EMPH_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
_EMPH_TARGETS = (0.3, 5.6, 11.2, 22.5, 38.0)


def severity_class(emphysema_pct: float) -> int:
    """Emphysema severity class 0–3 from the percentage of lung below −950 HU."""
    return int(np.searchsorted(SEVERITY_THRESHOLDS_PCT, emphysema_pct, side="right"))


@dataclass
class _Subject:
    """Per-subject anatomy and scanner parameters (independent of the voxel grid)."""

    width: float  # body left-right width (mm)
    depth: float  # body anterior-posterior depth (mm)
    cx: float
    cy: float
    p_body: float  # super-ellipse exponent of the body contour
    jitter: np.ndarray  # (K, 4): harmonic order, amplitude at z=-200, at z=+200, phase
    fat: float  # subcutaneous fat thickness (mm)
    muscle: float  # chest-wall muscle scale
    z_apex: float
    z_dome: float  # top of the left hemidiaphragm (mm)
    dome_h: float
    recess: float  # extra depth of the posterior costophrenic recess (mm)
    lobulation: float  # amplitude of lung surface lobulation (mm)
    heart_scale: float
    heart_dir: np.ndarray
    kyphosis: float
    vb_ax: float
    vb_ay: float
    pitch: float  # vertebral level height (mm)
    z_v0: float
    rib_drop: float  # how far ribs descend from back to front (mm)
    trachea_r: float
    carina_drop: float
    hu_fat: float
    hu_muscle: float
    hu_blood: float
    hu_liver: float
    hu_lung: float
    gravity: float  # extra density of dependent (posterior) lung (HU)
    hu_cortical: float
    hu_trabecular: float
    emph_target_pct: float
    emph_sigma: float  # size of emphysema clusters (mm)
    emph_upper: float  # upper-lobe predominance
    noise_hu: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "_Subject":
        u = rng.uniform
        width = u(280.0, 370.0)
        size_z = (width - 325.0) / 45.0  # -1 … 1
        k = np.arange(2, 6)
        jitter = np.column_stack([k, rng.normal(0, 0.018, 4), rng.normal(0, 0.018, 4), u(0, 2 * np.pi, 4)])
        z_apex = u(165.0, 185.0)
        lung_height = u(230.0, 265.0) + 12.0 * size_z
        heart_dir = np.array([-0.72 + u(-0.1, 0.1), 0.5 + u(-0.1, 0.1), -0.4 + u(-0.1, 0.1)])
        emph = float(np.interp(u(0, 1), _EMPH_QUANTILES, _EMPH_TARGETS))
        return cls(
            width=width,
            depth=width * u(0.6, 0.72),
            cx=u(-8.0, 8.0),
            cy=u(-12.0, 6.0),
            p_body=u(2.0, 2.4),
            jitter=jitter,
            fat=float(np.clip(5.0 + 0.18 * (width - 280.0) + rng.normal(0, 3), 3.0, 30.0)),
            muscle=u(0.8, 1.3),
            z_apex=z_apex,
            z_dome=z_apex - lung_height,
            dome_h=u(50.0, 70.0),
            recess=u(20.0, 40.0),
            lobulation=u(1.5, 3.0),
            heart_scale=u(0.85, 1.12) * (width / 325.0) ** 0.5,
            heart_dir=heart_dir / np.linalg.norm(heart_dir),
            kyphosis=u(4.0, 14.0),
            vb_ax=u(17.0, 21.0),
            vb_ay=u(13.0, 16.0),
            pitch=u(23.0, 28.0),
            z_v0=u(0.0, 30.0),
            rib_drop=u(110.0, 140.0),
            trachea_r=u(7.5, 10.0),
            carina_drop=u(45.0, 65.0),
            hu_fat=u(-112.0, -88.0),
            hu_muscle=u(38.0, 55.0),
            hu_blood=u(32.0, 48.0),
            hu_liver=u(50.0, 68.0),
            hu_lung=u(-885.0, -850.0),
            gravity=u(20.0, 50.0),
            hu_cortical=u(700.0, 1100.0),
            hu_trabecular=u(170.0, 380.0),
            emph_target_pct=emph,
            emph_sigma=u(3.0, 6.0),
            emph_upper=u(0.4, 1.4),
            noise_hu=u(12.0, 20.0) * (width / 325.0) ** 1.5,
        )


class _Anatomy:
    """Analytic geometry of one subject; every method takes broadcastable x, y, z in mm."""

    def __init__(self, s: _Subject, rng: np.random.Generator) -> None:
        self.s = s
        self.a = 0.5 * s.width
        self.b = 0.5 * s.depth
        self.lobes = LatticeField(rng, FOV_MM + 100.0, 24.0)
        self.z_mid = s.z_apex - 120.0
        self.y_back = s.cy - self.b
        self.y_vb0 = self.y_back + s.fat * 1.3 + 72.0 * s.muscle**0.3
        self.z_carina = s.z_apex - s.carina_drop
        self.x_side = 0.2 * s.width  # centre of each hemithorax (offset from cx)

    # -- body wall ---------------------------------------------------------------------
    def frame(self, x, y, z):
        """(signed distance to the body surface, angle θ around the body) in mm / radians."""
        s = self.s
        u, v = x - s.cx, y - s.cy
        theta = np.arctan2(v / self.b, u / self.a)
        zt = np.clip((z + 200.0) / 400.0, 0.0, 1.0)
        radius = 1.0
        for k, a0, a1, ph in s.jitter:
            radius = radius + (a0 + (a1 - a0) * zt) * np.cos(k * theta + ph)
        return superellipse_sdf(u, v, self.a, self.b, s.p_body, radius), theta

    def fat_thickness(self, theta):
        s = self.s
        return s.fat * (1.0 + 0.3 * np.cos(2 * theta) + 0.3 * np.maximum(0.0, -np.sin(theta)))

    def muscle_thickness(self, theta):
        sin = np.sin(theta)
        # thin laterally, pectorals in front, erector spinae concentrated beside the spine
        return self.s.muscle * (7.0 + 5.0 * np.maximum(0.0, sin) ** 2 + 30.0 * np.maximum(0.0, -sin) ** 10)

    def wall(self, theta, z):
        """Depth (mm) from the skin to the pleural cavity; the rib cage narrows towards the apex."""
        top = np.clip((z - (self.s.z_apex - 120.0)) / 120.0, 0.0, 1.0) ** 2
        lateral = np.abs(np.cos(theta))
        return self.fat_thickness(theta) + self.muscle_thickness(theta) + 11.0 + 45.0 * top * lateral

    # -- spine -------------------------------------------------------------------------
    def y_vb(self, z):
        return self.y_vb0 - self.s.kyphosis * (1.0 - ((z - self.z_mid) / 200.0) ** 2)

    def vb_sdf(self, x, y, z, grow: float = 0.0):
        """Signed distance to the (infinite) column of vertebral-body cross-sections."""
        s = self.s
        scale = 1.0 - 0.0012 * (z - self.z_mid)
        return superellipse_sdf(x - s.cx, y - self.y_vb(z), s.vb_ax * scale + grow, s.vb_ay * scale + grow, 2.3)

    def level(self, z):
        """(vertebral index k, offset from the centre of vertebral body k) along z."""
        s = self.s
        k = np.round((z - s.z_v0 - 0.5 * s.pitch) / s.pitch)
        return k, z - (s.z_v0 + 0.5 * s.pitch + k * s.pitch)

    def canal_y(self, z):
        scale = 1.0 - 0.0012 * (z - self.z_mid)
        return self.y_vb(z) - self.s.vb_ay * scale - 10.0

    def spine_zone_sdf(self, x, y, z):
        return superellipse_sdf(x - self.s.cx, y - (self.y_vb(z) - 14.0), 32.0, 36.0, 2.2)

    # -- mediastinum ---------------------------------------------------------------------
    def y_trachea(self, z):
        return self.y_vb(z) + self.s.vb_ay + 22.0

    def heart(self):
        s = self.s
        centre = np.array(
            [s.cx - 0.11 * s.width, s.cy + 0.1 * s.depth, s.z_dome + 40.0 * s.heart_scale]
        )
        axes = np.array([64.0, 43.0, 38.0]) * s.heart_scale
        d = s.heart_dir
        e1 = np.cross(d, [0.0, 0.0, 1.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1)
        return centre, axes, np.stack([d, e1, e2])

    def heart_sdf(self, x, y, z):
        return ellipsoid_sdf(x, y, z, *self.heart())

    def heart_box(self, margin: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
        centre, axes, _ = self.heart()
        r = axes.max() + margin
        return centre - r, centre + r

    def aorta_path(self):
        s = self.s
        (hx, hy, hz), axes, _ = self.heart()
        zc = self.z_carina
        yt = float(self.y_trachea(zc))
        yv = float(self.y_vb(zc))
        arch = zc + 28.0
        points = [
            (hx + 25.0, hy - 5.0, hz + 0.5 * axes[2]),
            (s.cx + 14.0, yt + 28.0, arch - 25.0),
            (s.cx + 4.0, yt + 18.0, arch),
            (s.cx - 14.0, yt - 4.0, arch + 4.0),
            (s.cx - 24.0, yv + 6.0, arch - 22.0),
            (s.cx - 20.0, float(self.y_vb(-60.0)) + 10.0, -60.0),
            (s.cx - 12.0, float(self.y_vb(-210.0)) + 14.0, -210.0),
        ]
        radii = [15.0, 15.0, 13.5, 13.0, 12.0, 11.5, 11.0]
        return points, radii

    def aorta_sdf(self, x, y, z):
        """Signed distance to the descending aorta (approximated as a vertical tube)."""
        s = self.s
        return np.sqrt((x - (s.cx - 22.0)) ** 2 + (y - (self.y_vb(z) + 8.0)) ** 2) - 12.0

    # -- lungs ---------------------------------------------------------------------------
    def diaphragm(self, x, y):
        """Height (mm) of the diaphragm under each lung."""
        s = self.s
        right = x > s.cx
        xs = s.cx + np.where(right, self.x_side, -self.x_side)
        top = s.z_dome + np.where(right, 14.0, 0.0)
        r2 = ((x - xs) / (0.24 * s.width)) ** 2 + ((y - s.cy) / (0.4 * s.depth)) ** 2
        back = np.maximum(0.0, -(y - s.cy) / self.b) ** 2
        return top - s.dome_h * np.minimum(r2, 2.5) - s.recess * back

    def apex(self, x, y):
        s = self.s
        xs = s.cx + np.where(x > s.cx, self.x_side, -self.x_side)
        r2 = (x - xs) ** 2 + (y - (s.cy - 0.1 * s.depth)) ** 2
        return s.z_apex - r2 / (2.0 * 60.0)

    def lung_sdf(self, x, y, z, lobes=None, frame=None, heart_sdf=None):
        """Approximate signed distance (mm) to the union of both lungs.

        ``lobes``, ``frame`` and ``heart_sdf`` may be passed when already computed.
        """
        s = self.s
        sdf_body, theta = self.frame(x, y, z) if frame is None else frame
        if heart_sdf is None:
            heart_sdf = self.heart_sdf(x, y, z)
        terms = [
            self.wall(theta, z) + sdf_body,  # outside the pleural cavity
            14.0 + 12.0 / (1.0 + np.exp((y - (self.y_trachea(z) + 30.0)) / 10.0)) - np.abs(x - s.cx),
            -self.spine_zone_sdf(x, y, z),
            6.0 - heart_sdf,
            3.0 - self.aorta_sdf(x, y, z),
            self.diaphragm(x, y) - z,
            z - self.apex(x, y),
        ]
        sdf = terms[0]
        for t in terms[1:]:
            sdf = np.maximum(sdf, t)
        if lobes is None:
            xb, yb, zb = np.broadcast_arrays(x, y, z)
            lobes = self.lobes.at(np.column_stack([xb.ravel(), yb.ravel(), zb.ravel()])).reshape(xb.shape)
        return sdf + s.lobulation * lobes

    def inside_lung(self, points: np.ndarray, margin: float = 1.5) -> np.ndarray:
        return self.lung_sdf(points[:, 0], points[:, 1], points[:, 2]) < -margin


def _vessel_and_airway_segments(an: _Anatomy, rng: np.random.Generator):
    """Tube segments for great vessels, pulmonary trees, airways; size independent."""
    s = an.s
    zc = an.z_carina
    yt = float(an.y_trachea(zc))
    (hx, hy, hz), haxes, _ = an.heart()
    great: list[np.ndarray] = []
    pts, radii = an.aorta_path()
    great.append(polyline_segments(pts, radii))
    arch_top = pts[2]
    for dx in (10.0, -4.0, -16.0):  # brachiocephalic, carotid, subclavian
        top = (s.cx + 2.2 * dx, arch_top[1] - 0.3 * dx, 215.0)
        great.append(polyline_segments([(arch_top[0] + dx, arch_top[1], arch_top[2]), top], [6.0, 5.0]))
    bif = (s.cx - 8.0, yt + 20.0, zc - 14.0)
    trunk = [(hx + 5.0, hy + 0.6 * haxes[1], hz + 0.3 * haxes[2]), (s.cx - 12.0, yt + 32.0, zc - 26.0), bif]
    great.append(polyline_segments(trunk, [14.0, 13.0, 12.0]))
    hilum_r = np.array([s.cx + 44.0, yt - 4.0, zc - 24.0])
    hilum_l = np.array([s.cx - 46.0, yt - 8.0, zc - 14.0])
    great.append(polyline_segments([bif, (s.cx + 20.0, yt + 6.0, zc - 20.0), tuple(hilum_r)], [11.0, 10.5, 9.0]))
    great.append(polyline_segments([bif, tuple(hilum_l)], [11.0, 9.0]))
    svc = [(s.cx + 24.0, yt + 24.0, 215.0), (s.cx + 26.0, yt + 30.0, zc - 20.0), (hx + 45.0, hy, hz + 20.0)]
    great.append(polyline_segments(svc, [9.0, 10.0, 10.0]))
    yo = float(an.y_vb(zc)) + s.vb_ay + 7.0  # oesophagus, behind the trachea
    great.append(polyline_segments([(s.cx - 4.0, yo, 215.0), (s.cx - 8.0, yo - 2.0, -210.0)], [7.0, 7.0]))
    great_segs = np.concatenate(great)

    la = np.array([hx + 15.0, hy - 0.55 * haxes[1], hz + 12.0])  # left atrium
    roots = []
    trunks = []  # interlobar arteries: from each hilum down and back, behind the heart
    for side, hil in ((1.0, hilum_r), (-1.0, hilum_l)):
        for d in ((0.35, 0.15, 0.92), (0.3, -0.45, 0.85), (0.95, 0.3, 0.05), (0.8, -0.5, 0.1), (0.5, 0.6, -0.6)):
            roots.append([*hil, side * d[0], d[1], d[2]])
        low = hil + np.array([side * 24.0, -25.0, -90.0])
        trunks.append([*hil, *low, 7.0, 6.0])
        for d in ((0.3, 0.0, -0.95), (0.6, -0.3, -0.7), (0.2, -0.7, -0.7), (0.7, 0.25, -0.6), (0.9, -0.2, -0.1)):
            roots.append([*low, side * d[0], d[1], d[2]])
        vein_start = np.array([s.cx + side * 30.0, la[1], la[2]])
        for d in ((0.8, -0.1, 0.55), (0.8, -0.2, -0.55), (0.6, -0.55, -0.55)):
            roots.append([*vein_start, side * d[0], d[1], d[2]])
    great_segs = np.concatenate([great_segs, np.array(trunks)])
    vessels = grow_tree(
        rng,
        np.array(roots),
        an.inside_lung,
        generations=8,
        length_mm=26.0,
        radius_mm=5.0,
        length_ratio=0.84,
        radius_ratio=0.84,
        branch_angle_deg=(25.0, 50.0),
    )
    # connect the hila/atrium to the trees' roots
    vessels = np.concatenate([vessels, great_segs])

    carina = np.array([s.cx, yt, zc])
    top = np.array([s.cx, float(an.y_trachea(210.0)), 210.0])
    rb = carina + np.array([0.42, -0.1, -0.9]) * 26.0
    lb = carina + np.array([-0.7, -0.15, -0.7]) * 46.0
    main = np.concatenate(
        [
            polyline_segments([tuple(top), tuple(carina)], [s.trachea_r, s.trachea_r]),
            polyline_segments([tuple(carina), tuple(rb)], [0.75 * s.trachea_r, 0.7 * s.trachea_r]),
            polyline_segments([tuple(carina), tuple(lb)], [0.7 * s.trachea_r, 0.65 * s.trachea_r]),
        ]
    )
    aroots = [
        [*rb, 0.6, 0.0, 0.8],
        [*rb, 0.3, 0.1, -0.95],
        [*rb, 0.5, 0.7, -0.5],
        [*lb, -0.5, 0.3, 0.8],
        [*lb, -0.4, -0.2, -0.9],
    ]
    airways = grow_tree(
        rng, np.array(aroots), lambda p: an.inside_lung(p, 3.0), generations=3, length_mm=24.0, radius_mm=4.5
    )
    return vessels, np.concatenate([main, airways])


def _spine_tubes(an: _Anatomy) -> np.ndarray:
    """Spinous and transverse processes of every vertebra in the field of view."""
    s = an.s
    segs = []
    for k in range(-12, 14):
        zk = s.z_v0 + 0.5 * s.pitch + k * s.pitch
        if not -230.0 < zk < 230.0:
            continue
        yc = float(an.canal_y(zk))
        segs.append([s.cx, yc - 12.0, zk, s.cx, yc - 42.0, zk - 16.0, 5.0, 4.0])
        for side in (1.0, -1.0):
            segs.append([s.cx + side * 9.0, yc - 2.0, zk + 2.0, s.cx + side * 34.0, yc - 8.0, zk + 4.0, 5.5, 4.5])
    return np.array(segs)


class _Canvas:
    """An HU image painted layer by layer with partial-volume weights.

    After :meth:`track` it also records the transmittance of the layers painted
    since, so that a layer can be inserted at that depth afterwards (used to
    calibrate emphysema on the final image).
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.img = np.full(shape, -1000.0, dtype=np.float32)
        self.labels = np.full(shape, BACKGROUND, dtype=np.int16)
        self.trans: np.ndarray | None = None

    def paint(self, occ: np.ndarray, hu, label: int) -> None:
        """Paint ``hu`` with weight ``occ`` (fraction of each voxel covered).

        Voxels the layer covers at least half (it is then their main content) get ``label``.
        """
        self.img += occ * (hu - self.img)
        self.labels[occ >= 0.5] = label
        if self.trans is not None:
            self.trans *= 1.0 - occ

    def track(self) -> None:
        self.trans = np.ones_like(self.img)


def _emphysema_pct(img: np.ndarray, lung: np.ndarray) -> float:
    """Share (%) of lung voxels below -950 HU among those below -500 HU."""
    lung_vox = lung & (img < LUNG_MAX_HU)
    return 100.0 * float((lung_vox & (img < EMPHYSEMA_MAX_HU)).sum()) / max(int(lung_vox.sum()), 1)


def _calibrate_emphysema(
    clean: np.ndarray,
    noise: np.ndarray,
    layer: np.ndarray,
    field: np.ndarray,
    lung: np.ndarray,
    core: np.ndarray,
    target_pct: float,
    iterations: int = 14,
) -> np.ndarray:
    """Threshold ``field`` so that the final image has about ``target_pct`` % emphysema.

    ``clean`` is the blurred noise-free image without emphysema, ``noise`` the
    blurred noise, and ``layer`` the un-blurred change full emphysema would make
    (already attenuated by the structures painted over the lung). Blur is
    linear, so each trial only blurs the emphysema layer inside the lungs'
    bounding box. The share of ``core`` lung above the threshold is found by a
    safeguarded secant search. Returns the noise-free image with emphysema.
    """
    inside = np.argwhere(lung)
    if inside.size == 0 or target_pct <= 0:
        return clean
    margin = 4
    lo_i = np.maximum(inside.min(axis=0) - margin, 0)
    hi_i = inside.max(axis=0) + margin + 1
    box = tuple(slice(a, b) for a, b in zip(lo_i, hi_i))
    f_b, l_b, lung_b, clean_b, noise_b = field[box], layer[box], lung[box], clean[box], noise[box]
    ranked = np.sort(field[core]) if core.any() else np.sort(field[lung])
    ranks = np.linspace(0.0, 1.0, len(ranked))

    def threshold(q: float) -> float:
        """Field value exceeded by a share ``q`` of the core lung (interpolated)."""
        if q <= 0:
            return float("inf")
        return float(np.interp(1.0 - q, ranks, ranked))

    def render(thr: float) -> np.ndarray:
        weight = np.clip((f_b - thr) / 0.3 + 0.67, 0.0, 1.0)  # about -950 HU at the threshold
        return clean_b + ndi.gaussian_filter(weight * l_b, BLUR_SIGMA_VOX, truncate=3.0)

    q_lo, q_hi = 0.0, 0.98
    q = min(target_pct / 100.0, q_hi)
    best = (float("inf"), 0.0)
    for _ in range(iterations):
        measured = _emphysema_pct(render(threshold(q)) + noise_b, lung_b)
        err = measured - target_pct
        if abs(err) < abs(best[0]):
            best = (err, q)
        if abs(err) < 0.02 * target_pct + 0.05:
            break
        if err < 0:
            q_lo = q
        else:
            q_hi = q
        q_new = q * target_pct / max(measured, 1e-3)
        # secant-like step while it stays well inside the bracket, else bisect
        inside = q_lo + 0.1 * (q_hi - q_lo) < q_new < q_hi - 0.1 * (q_hi - q_lo)
        q = q_new if inside else 0.5 * (q_lo + q_hi)
    clean = clean.copy()
    clean[box] = render(threshold(best[1]))
    return clean


def _scanner_noise(shape: tuple[int, int, int], noise_hu: float, stream: np.random.SeedSequence) -> np.ndarray:
    """The scanner's noise: white noise through the partial-volume blur, pre-scaled by the kernel's
    L2 norm so that its final standard deviation is ``noise_hu`` (float32)."""
    kernel = ndi.gaussian_filter1d(np.eye(13, dtype=np.float64)[6], BLUR_SIGMA_VOX, truncate=3.0)
    gain = float(np.sqrt((kernel**2).sum())) ** 3
    noise = (noise_hu / gain) * np.random.default_rng(stream).standard_normal(shape, dtype=np.float32)
    return ndi.gaussian_filter(noise, BLUR_SIGMA_VOX, truncate=3.0)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 for t ≤ 0, 1 for t ≥ 1, 3t² − 2t³ between (C¹)."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def breathing_amplitudes(seed: int) -> tuple[float, float]:
    """(craniocaudal, anteroposterior) breathing amplitude in mm of subject ``seed`` (0.1 µm steps), from
    its own stream."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=BREATHING_STREAM + (0,)))
    return round(float(rng.uniform(*BREATHING_CC_MM)), 4), round(float(rng.uniform(*BREATHING_AP_MM)), 4)


def _breathing_field(an: _Anatomy, grid, cc_mm: float, ap_mm: float) -> np.ndarray:
    """u = c(z) · g(x, y, z) · (0, ap_mm · a(y), −cc_mm) on ``grid`` (module docstring): (3, X, Y, Z)
    float32, mm."""
    s = an.s
    x, y, z = grid.xyz
    z_base = s.z_dome + cc_mm  # the top of the diaphragm at expiration
    c = _smoothstep((s.z_apex - z) / (s.z_apex - z_base))
    a = _smoothstep((y - an.y_vb0) / (s.cy + an.b - an.y_vb0))
    spine = superellipse_sdf(x - s.cx, y - (an.y_vb(z) - _SPINE_RIGID_BACK_MM), *_SPINE_RIGID_AXES_MM, 2.2)
    w = c * _smoothstep((spine - _SPINE_RIGID_MARGIN_MM) / _SPINE_RIGID_RAMP_MM)
    field = np.zeros((3, *grid.shape), dtype=np.float32)
    field[1] = ap_mm * a * w
    field[2] = -cc_mm * w
    return field


def resample(volume: np.ndarray, field_mm: np.ndarray, spacing: Sequence[float], order: int = 1) -> np.ndarray:
    """``volume`` sampled at p + u(p): ``field_mm`` (3, X, Y, Z) in mm along the axes, ``spacing`` the voxel
    size; ``order`` 1 linear (float32 out), 0 nearest (label maps; the input's dtype). Points beyond the grid
    take the nearest border voxel."""
    sp = np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)
    out = np.empty(volume.shape, dtype=volume.dtype if order == 0 else np.float32)
    src = volume if order == 0 else np.asarray(volume, dtype=np.float32)
    step = max(1, (1 << 21) // max(1, volume.shape[1] * volume.shape[2]))  # x-planes per batch
    for i0 in range(0, volume.shape[0], step):
        i1 = min(i0 + step, volume.shape[0])
        idx = np.mgrid[i0:i1, 0 : volume.shape[1], 0 : volume.shape[2]].astype(np.float64)
        idx += field_mm[:, i0:i1] / sp
        out[i0:i1] = ndi.map_coordinates(src, idx, order=order, mode="nearest", prefilter=False)
    return out


def breath_field(phantom: Phantom) -> np.ndarray:
    """The breathing displacement of a phantom generated with ``breathing=True``: (3, X, Y, Z) float32, mm
    (its ``breath_x``, ``breath_y``, ``breath_z``). ValueError for a phantom without them."""
    if any(name not in phantom.volumes for name in BREATH_DISPLACEMENT_VOLUMES):
        raise ValueError(f"need a thorax-ct phantom generated with breathing=True (volumes "
                         f"{', '.join(BREATH_DISPLACEMENT_VOLUMES)})")
    return np.stack([phantom.volumes[name] for name in BREATH_DISPLACEMENT_VOLUMES])


def expiration_phantom(phantom: Phantom) -> Phantom:
    """The expiration scan of a phantom generated with ``breathing=True`` as a :class:`Phantom`: its image
    ``expiration``, its noise-free image (the inspiration's resampled by the field, as :func:`generate`
    makes it) and ``tissue`` = ``expiration_tissue``; for rendering it on another scanner (:mod:`.domains`)."""
    field = breath_field(phantom)
    return Phantom(
        kind=KIND,
        array=phantom.volumes["expiration"],
        spacing=phantom.spacing,
        factors={},
        volumes={"tissue": phantom.volumes["expiration_tissue"]},
        origin=phantom.origin,
        noise_free=resample(phantom.noise_free, field, phantom.spacing, order=1),
    )


def generate(
    size: int | tuple[int, int, int],
    seed: int,
    nodules: bool = False,
    spacing: float | tuple[float, float, float] | None = None,
    lesions: Sequence[str] = (),
    breathing: bool = False,
) -> Phantom:
    """Generate one thorax CT phantom of ``size``³ voxels over a 400 mm field of view.

    ``size`` may also be a shape (X, Y, Z) and ``spacing`` a voxel size in mm (one value
    or one per axis; default 400 mm over the largest axis): the grid is centred on the
    same anatomy. The same ``seed`` gives a bit-identical array; anatomy parameters do
    not depend on the grid. With ``nodules`` 0–3 solid nodules (4–15 mm radius) are
    inserted into the lungs without changing the rest of the volume.

    ``lesions``: kinds among ``nodule``, ``emphysema``, ``mass`` (:mod:`.lesions`; not with
    ``nodules``), painted last from their own random stream onto the noise-free image: the
    volume is the one generated without them except on the lesions' voxels. Adds the volumes
    ``lesion`` (int16 instance map) and ``normal`` (the image without lesions) and the factors
    ``abnormal``, ``lesion_count``, ``lesion_ml`` and ``lesions`` (JSON); ``noise_free`` then
    includes the lesions.

    Masks: ``body``, ``lung`` (parenchyma with its vessels, without airways,
    bone and nodules), ``emphysema`` (lung whose noise-free value is below
    −950 HU), ``bone``, ``heart``, ``airway`` (lumen), ``vessels``.
    Volumes: ``tissue``, the label map of :data:`TISSUE_CLASSES`. ``noise_free`` is the image
    before noise (partial volume, emphysema and nodules included, HU, not rounded): the
    subject that :mod:`.domains` renders on another scanner.

    ``breathing``: adds the same subject and scan at end-expiration (see the module docstring):
    the volumes ``expiration`` (HU), ``expiration_tissue`` and the true displacement between the
    states ``breath_x``, ``breath_y``, ``breath_z`` (float32, mm; expiration(p) = image(p + u(p)))
    and the factors of :data:`BREATHING_FACTORS`; not with ``lesions`` (ValueError). Nothing else
    changes: the other arrays and factors are bit for bit those generated without it.
    """
    lesions = lesion_lib.check_kinds(KIND, lesions)
    if nodules and lesions:
        raise ValueError("nodules and lesions cannot be combined (lesions=['nodule'] inserts nodules, with a mask)")
    if breathing and lesions:
        raise ValueError("a breathing thorax phantom cannot have lesions (lesions are not moved with the breathing)")
    ss = np.random.SeedSequence(seed)
    # the first six streams as before lesions existed
    s_par, s_lat, s_tree, s_tex, s_noise, s_nod, s_les = ss.spawn(7)
    s = _Subject.sample(np.random.default_rng(s_par))
    an = _Anatomy(s, np.random.default_rng(s_lat))
    grid = request_grid(size, spacing, FOV_MM)
    sp = grid.voxel_mm  # partial-volume ramp width (the spacing for isotropic voxels)
    sp_axes = np.asarray(grid.spacing)
    x, y, z = grid.xyz
    axes = grid.axes
    shape = grid.shape
    tex_rng = np.random.default_rng(s_tex)

    cv = _Canvas(shape)

    # body wall
    sdf_body, theta = an.frame(x, y, z)
    sdf_body = sdf_body.astype(np.float32)
    depth = -sdf_body
    body = sdf_body <= 0
    cv.paint(occupancy(sdf_body, sp), s.hu_muscle, SOFT_TISSUE)
    t_fat = an.fat_thickness(theta)
    cv.paint(occupancy(np.maximum(2.5 - depth, depth - t_fat), sp), s.hu_fat, FAT)
    wall = an.wall(theta, z)
    sdf_cav = (wall - depth).astype(np.float32)
    cv.paint(occupancy(sdf_cav, sp), s.hu_fat + 20.0, FAT)  # mediastinal fat

    # below the diaphragm: diaphragm muscle, liver on the right, other viscera on the left
    z_dia = an.diaphragm(x, y)
    cv.paint(occupancy(np.maximum(sdf_cav - 8.0, z - z_dia), sp), s.hu_muscle, SOFT_TISSUE)
    liver_hu = s.hu_muscle + (s.hu_liver - s.hu_muscle) / (1.0 + np.exp(-(x - s.cx + 10.0) / 12.0))
    cv.paint(occupancy(np.maximum(sdf_cav - 8.0, z - (z_dia - 6.0)), sp), liver_hu, SOFT_TISSUE)

    # paravertebral muscle, heart with pericardial fat
    cv.paint(occupancy(np.maximum(sdf_cav, an.spine_zone_sdf(x, y, z)), sp), s.hu_muscle, SOFT_TISSUE)
    sdf_heart = np.full(shape, 1e3, dtype=np.float32)
    box = grid.box(*an.heart_box())
    bx, by, bz = x[box[0], :, :], y[:, box[1], :], z[:, :, box[2]]
    sdf_heart[box] = an.heart_sdf(bx, by, bz)
    cv.paint(occupancy(sdf_heart - 5.0, sp), s.hu_fat + 10.0, FAT)
    cv.paint(occupancy(sdf_heart, sp), s.hu_blood, BLOOD)
    heart = sdf_heart <= 0

    # lungs
    lobes = an.lobes.on_grid(*axes)
    sdf_lung = an.lung_sdf(x, y, z, lobes=lobes, frame=(sdf_body, theta), heart_sdf=sdf_heart).astype(np.float32)
    lung_region = sdf_lung <= 0
    posterior = np.clip(-(y - s.cy) / an.b, 0.0, 1.0) ** 1.5
    parenchyma = s.hu_lung + s.gravity * posterior + 18.0 * smooth_noise(shape, 2.5 / sp_axes, tex_rng)
    cv.paint(occupancy(sdf_lung, sp), parenchyma, LUNG)

    # emphysema: a smooth random field, thresholded later (see _calibrate_emphysema) so that
    # the share of lung below -950 HU on the final image matches the subject's target.
    # Clusters are at least a few voxels across; upper lobes are favoured.
    sig = np.maximum(s.emph_sigma / sp_axes, 1.2)
    field = smooth_noise(shape, sig, tex_rng) + 0.6 * smooth_noise(shape, 3.0 * sig, tex_rng)
    field += s.emph_upper * np.clip((z - (s.z_dome + s.z_apex) / 2.0) / (s.z_apex - s.z_dome), -1.0, 1.0)
    emph_delta = occupancy(sdf_lung, sp) * ((-1000.0 + 0.2 * (parenchyma - s.hu_lung)) - cv.img)
    cv.track()

    # vessels and airways
    tree_rng = np.random.default_rng(s_tree)
    vessel_segs, airway_segs = _vessel_and_airway_segments(an, tree_rng)
    vessels = np.zeros(shape, dtype=np.float32)
    draw_tubes(vessels, grid, vessel_segs)
    cv.paint(vessels, s.hu_blood, BLOOD)
    walls = np.zeros(shape, dtype=np.float32)
    wall_segs = airway_segs.copy()
    wall_segs[:, 6:8] += 0.2 * wall_segs[:, 6:8] + 0.8
    draw_tubes(walls, grid, wall_segs)
    cv.paint(walls, 20.0, SOFT_TISSUE)
    lumen = np.zeros(shape, dtype=np.float32)
    draw_tubes(lumen, grid, airway_segs)
    cv.paint(lumen, -1000.0, AIRWAY)

    # bones
    bone = np.zeros(shape, dtype=bool)
    k_lvl, dz = an.level(z)
    half = 0.5 * s.pitch - 2.5  # half height of a vertebral body; discs are 5 mm
    sdf_vb = an.vb_sdf(x, y, z)
    sdf_body_vb = np.maximum(sdf_vb, np.abs(dz) - half)
    sdf_disc = np.maximum(an.vb_sdf(x, y, z, grow=1.0), np.abs(dz) - half - 3.0)
    cv.paint(occupancy(sdf_disc, sp), 80.0, SOFT_TISSUE)  # discs
    del sdf_disc
    cv.paint(occupancy(sdf_body_vb, sp), s.hu_cortical, BONE)
    cv.paint(occupancy(sdf_body_vb + 1.8, sp), s.hu_trabecular, BONE)
    bone |= sdf_body_vb <= _BONE_MASK_SDF * sp
    # vertebral arch around the canal, with the cord inside
    rho = np.sqrt((x - s.cx) ** 2 + (y - an.canal_y(z)) ** 2)
    sdf_arch = np.maximum(np.abs(rho - 12.0) - 4.0, np.abs(dz) - half)
    sdf_arch = np.maximum(sdf_arch, (y - an.canal_y(z)) - 6.0)
    post_hu = 0.8 * s.hu_cortical + 0.2 * s.hu_trabecular  # arches and processes: mostly compact bone
    cv.paint(occupancy(sdf_arch, sp), post_hu, BONE)
    cv.paint(occupancy(rho - 8.0, sp), 30.0, SOFT_TISSUE)
    bone |= sdf_arch <= _BONE_MASK_SDF * sp
    procs = np.zeros(shape, dtype=np.float32)
    draw_tubes(procs, grid, _spine_tubes(an))
    cv.paint(procs, post_hu, BONE)
    bone |= procs >= 0.5 - _BONE_MASK_SDF

    # ribs: follow the chest wall, descending from the spine towards the front
    phi = np.abs(np.angle(np.exp(1j * (theta + np.pi / 2))))  # 0 at the back, π at the front
    zr = z + s.rib_drop * (phi / np.pi) ** 1.2
    k_top = np.round((s.z_apex - 8.0 - s.z_v0 - 0.5 * s.pitch) / s.pitch)
    kr = np.round((zr - s.z_v0 - 0.5 * s.pitch) / s.pitch)
    rib_no = k_top - kr + 1  # 1 … 12 from the top
    dzr = zr - (s.z_v0 + 0.5 * s.pitch + kr * s.pitch)
    d_rib = wall - 6.0
    sdf_rib = (np.sqrt(((depth - d_rib) / 3.5) ** 2 + (dzr / 6.0) ** 2) - 1.0) * 3.5
    bone_end = np.where(rib_no <= 7, 0.72, np.where(rib_no <= 10, 0.7, 0.55)) * np.pi
    cart_end = np.where(rib_no <= 7, 0.93, np.where(rib_no <= 10, 0.86, 0.0)) * np.pi
    valid = (rib_no >= 1) & (rib_no <= 12) & (phi > 0.13 * np.pi)
    rib_bone = valid & (phi <= bone_end)
    cartilage = valid & (phi > bone_end) & (phi <= cart_end)
    sdf_rib = np.where(rib_bone | cartilage, sdf_rib, 1e3).astype(np.float32)
    cv.paint(occupancy(np.where(cartilage, sdf_rib, 1e3), sp), 120.0, SOFT_TISSUE)
    sdf_rb = np.where(rib_bone, sdf_rib, 1e3)
    cv.paint(occupancy(sdf_rb, sp), s.hu_cortical, BONE)
    cv.paint(occupancy(sdf_rb + 1.2, sp), s.hu_trabecular, BONE)
    bone |= sdf_rb <= _BONE_MASK_SDF * sp

    # sternum (anterior midline), scapulae (posterolateral plates), clavicles
    (hx, hy, hz), haxes, _ = an.heart()
    z_st_top = s.z_apex - 30.0
    sw = 14.0 + 10.0 * np.clip((z - (z_st_top - 50.0)) / 50.0, 0.0, 1.0)
    d_st = an.fat_thickness(np.pi / 2) + 7.0
    sdf_st = np.maximum(np.abs(x - s.cx) - sw, np.abs(depth - d_st) - 5.5)
    sdf_st = np.maximum(sdf_st, np.maximum(z - z_st_top, (hz - 0.4 * haxes[2]) - z))
    sdf_st = np.where(y > s.cy, sdf_st, 1e3)
    cv.paint(occupancy(sdf_st, sp), s.hu_cortical, BONE)
    cv.paint(occupancy(sdf_st + 1.5, sp), s.hu_trabecular, BONE)
    bone |= sdf_st <= _BONE_MASK_SDF * sp
    zs_top, zs_bot = s.z_apex + 20.0, s.z_apex - 135.0
    frac = np.clip((zs_top - z) / (zs_top - zs_bot), 0.0, 1.0)
    phi_lo = (0.2 + 0.12 * frac) * np.pi
    arc = 140.0  # mm per radian, to turn angular limits into distances
    sdf_sc = np.abs(depth - (an.fat_thickness(theta) + 8.0)) - 2.5
    sdf_sc = np.maximum(sdf_sc, np.maximum(phi_lo - phi, phi - 0.42 * np.pi) * arc)
    sdf_sc = np.maximum(sdf_sc, np.maximum(z - zs_top, zs_bot - z))
    cv.paint(occupancy(sdf_sc, sp), post_hu, BONE)
    bone |= sdf_sc <= _BONE_MASK_SDF * sp
    clav = np.zeros(shape, dtype=np.float32)
    y_front = s.cy + an.b - an.fat_thickness(np.pi / 2) - 8.0
    for side in (1.0, -1.0):
        pts = [
            (s.cx + side * 20.0, y_front, z_st_top + 4.0),
            (s.cx + side * 0.22 * s.width, y_front + 2.0, z_st_top + 14.0),
            (s.cx + side * 0.4 * s.width, s.cy + 0.1 * s.depth, z_st_top + 24.0),
        ]
        draw_tubes(clav, grid, polyline_segments(pts, [7.0, 6.0, 7.0]))
    cv.paint(clav, post_hu, BONE)
    bone |= clav >= 0.5 - _BONE_MASK_SDF

    # the lung mask includes its vessels, as clinical lung segmentations do; the
    # HU rule (< -500) leaves out the dense ones when volumes are measured
    lung = lung_region & (walls < 0.5) & ~bone

    # scanner: white noise, then one Gaussian blur that both correlates the noise
    # and adds partial volume; the noise amplitude is pre-scaled by the kernel's
    # L2 norm so that its final standard deviation is noise_hu.
    noise = _scanner_noise(shape, s.noise_hu, s_noise)
    clean = ndi.gaussian_filter(cv.img, BLUR_SIGMA_VOX, truncate=3.0)
    core = lung & (sdf_lung <= -0.5 * sp)
    emph_layer = emph_delta * cv.trans
    tissue = cv.labels
    del cv, emph_delta
    clean = _calibrate_emphysema(clean, noise, emph_layer, field, lung, core, s.emph_target_pct)

    # lung nodules: own random stream, painted last, so the rest of the volume is unchanged
    nodule_list: list[dict] = []
    if nodules:
        nod_rng = np.random.default_rng(s_nod)
        count = int(nod_rng.integers(0, 4))
        nod, placed = lesion_lib.solid_nodules(nod_rng, grid, lung, sdf_lung, count, radius_mm=(4.0, 15.0))
        for centre, r in placed:
            c_vox = grid.to_index(centre)
            nodule_list.append(
                {
                    "x": round(float(c_vox[0]), 2),
                    "y": round(float(c_vox[1]), 2),
                    "z": round(float(c_vox[2]), 2),
                    "radius_mm": round(r, 2),
                    "radius_vox": round(r / min(grid.spacing), 3),  # along the finest axis
                }
            )
        # partial volume of the nodule edge in the blurred image (blur is linear in occupancy)
        nod_b = ndi.gaussian_filter(nod, BLUR_SIGMA_VOX, truncate=3.0)
        clean += nod_b * ((s.hu_blood + 5.0) - clean)
        lung &= nod < 0.5

    img = clean + noise
    # ground-truth emphysema: lung whose noise-free (partial-volume) value is below -950 HU
    emphysema = lung & (clean < EMPHYSEMA_MAX_HU)
    if not lesions:
        del noise
    img = np.round(np.clip(img, HU_MIN, HU_MAX)).astype(np.float32)

    # ground truth measured on the final image inside the true masks
    voxel_ml = grid.voxel_ml
    n_lung = int((lung & (img < LUNG_MAX_HU)).sum())
    emph_pct = _emphysema_pct(img, lung)
    cols = np.flatnonzero(body.any(axis=(1, 2)))
    # measured values are kept at full precision: they are exact counts × voxel volume
    factors: dict[str, float | int | str] = {
        "lung_volume_ml": n_lung * voxel_ml,
        # bone plus its one-voxel partial-volume rim: blur lifts cortical edges above +300 HU
        "bone_volume_ml": int((ndi.binary_dilation(bone) & (img > BONE_MIN_HU)).sum()) * voxel_ml,
        "emphysema_pct": emph_pct,
        "body_size_mm": float((cols[-1] - cols[0] + 1) * grid.spacing[0]) if cols.size else 0.0,
        "heart_volume_ml": int(heart.sum()) * voxel_ml,
        "noise_hu": round(s.noise_hu, 2),
        "label": severity_class(emph_pct),
    }
    if nodules:
        factors["nodule_count"] = len(nodule_list)
        factors["nodule_positions"] = json.dumps(nodule_list)
    masks = {
        "body": body,
        "lung": lung,
        "emphysema": emphysema & lung,
        "bone": bone,
        "heart": heart,
        "airway": lumen >= 0.5,
        "vessels": vessels >= 0.5,
    }
    # the label map: what each voxel mostly holds, as painted, then the ground-truth masks
    tissue[masks["emphysema"]] = EMPHYSEMA
    tissue[bone] = BONE
    if nodules:
        tissue[nod >= 0.5] = NODULE
    volumes = {"tissue": tissue}

    # lesions: own random stream, painted last onto the noise-free image; everything above
    # (factors, masks, tissue) is the subject's normal anatomy, and `normal` its image
    if lesions:
        z_upper = 0.5 * (s.z_dome + s.z_apex)
        mediastinum = (
            (sdf_cav < 0)
            & ~lung_region
            & np.isin(tissue, (FAT, BLOOD, SOFT_TISSUE))
            & (np.abs(x - s.cx) < 40.0)
            & (z > an.heart()[0][2])
            & (z < s.z_apex - 20.0)
            & (y > an.y_trachea(z) + 5.0)
        )

        def site(name: str, r: float) -> np.ndarray:
            if name == "nodule":  # as --nodules: at least r + 2 mm inside the lung
                return lung & (sdf_lung < -(r + 2.0))
            if name == "bulla":  # upper half of the lungs; the bulla is confined to the lung
                return lung & (sdf_lung < -0.25 * r) & (z > z_upper)
            if name == "lung":
                return lung & (sdf_lung < -0.5 * r)
            if name == "mediastinum":
                return mediastinum & (sdf_lung > 0.25 * r)
            raise ValueError(f"no thorax-ct lesion site {name!r}")

        with_lesions = clean.copy()
        lung_occ = occupancy(sdf_lung, sp)
        instance, records = lesion_lib.insert(
            np.random.default_rng(s_les), KIND, lesions, grid, site, {"hu": with_lesions}, {"lung": lung_occ},
            blur_sigma_vox=BLUR_SIGMA_VOX,
        )
        del lung_occ
        volumes["lesion"] = instance
        volumes["normal"] = img
        img = with_lesions + noise
        del noise
        img = np.round(np.clip(img, HU_MIN, HU_MAX)).astype(np.float32)
        clean = with_lesions
        factors.update(lesion_lib.factors(records, voxel_ml))

    # breathing: the same subject and scanner at end-expiration, the noise-free image resampled by a
    # known field, with noise drawn anew from its own stream (nothing above changes)
    if breathing:
        cc_mm, ap_mm = breathing_amplitudes(seed)
        field = _breathing_field(an, grid, cc_mm, ap_mm)
        exp_noise = _scanner_noise(shape, s.noise_hu, np.random.SeedSequence(seed, spawn_key=BREATHING_STREAM + (1,)))
        expiration = resample(clean, field, grid.spacing, order=1) + exp_noise
        del exp_noise
        expiration = np.round(np.clip(expiration, HU_MIN, HU_MAX)).astype(np.float32)
        lung_exp = resample(lung.astype(np.uint8), field, grid.spacing, order=0) > 0
        factors.update({
            "breathing_cc_mm": cc_mm,
            "breathing_ap_mm": ap_mm,
            "lung_volume_ml_expiration": int((lung_exp & (expiration < LUNG_MAX_HU)).sum()) * voxel_ml,
        })
        volumes["expiration"] = expiration
        volumes["expiration_tissue"] = resample(tissue, field, grid.spacing, order=0)
        volumes.update(zip(BREATH_DISPLACEMENT_VOLUMES, field))
    return Phantom(
        kind=KIND,
        array=img,
        spacing=grid.spacing,
        factors=factors,
        masks=masks,
        volumes=volumes,
        noise_free=clean,
    )
