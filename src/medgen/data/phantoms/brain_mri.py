"""Brain MRI phantom: skull-stripped T1-weighted volumes built from real anatomy.

The anatomy is the MNI152 2009a symmetric template (T1 image and grey/white
matter probability maps at 1 mm) that ships inside nilearn, so no download is
needed. Each subject gets:

* a random head size (±5 %), small rotation and translation, and a smooth
  random deformation of a few millimetres;
* an atrophy factor ``a`` in [0, 1] that thins the cortex (grey matter within
  ``a`` · 2.5 mm of the outer brain surface becomes CSF) and enlarges the
  ventricles (their boundary moves outwards by ``a`` · 5 mm, plus a small
  subject-specific baseline);
* a random grey/white contrast, a smooth multiplicative bias field (±15 %),
  a random scanner gain and Rician noise (2–4 % of white matter).

Intensities are T1-like and ≥ 0: white matter ≈ 1000 × gain, grey matter
darker, CSF dark, background ≈ 0 (Rician noise floor). Voxel (x, y, z) is in
RAS+ and the affine places the volume in (approximately) MNI coordinates.

Factors (ground truth from the tissue maps, in ml): ``brain_volume_ml``
(grey + white matter), ``gm_volume_ml``, ``wm_volume_ml``,
``ventricle_volume_ml``, ``intracranial_volume_ml``, ``atrophy``, and
``label`` = atrophy class 0–3 (thresholds 0.25, 0.5, 0.75).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from medgen.data.phantoms.noise import LatticeField
from medgen.data.phantoms.phantom import Phantom
from medgen.data.phantoms.shapes import Grid, rotation_matrix

KIND = "brain-mri"
FOV_MM = 200.0
#: World (MNI) position of the centre of the field of view, mm.
FOV_CENTRE_MNI = (0.0, -17.0, 5.0)
#: Upper bounds (exclusive) of atrophy for classes 0, 1, 2; ≥ the last is class 3.
ATROPHY_THRESHOLDS = (0.25, 0.5, 0.75)
CORTEX_THINNING_MM = 2.5  # at atrophy 1
VENTRICLE_GROWTH_MM = 5.0  # at atrophy 1

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def atrophy_class(atrophy: float) -> int:
    """Atrophy class 0–3 from the atrophy factor in [0, 1]."""
    return int(np.searchsorted(ATROPHY_THRESHOLDS, atrophy, side="right"))


def _template_dir() -> Path:
    # Located without importing nilearn (its import is slow and not needed here).
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the brain-mri phantom needs nilearn (pip install nilearn) for the MNI152 template")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@dataclass
class _Template:
    """Template maps cropped to the head, at 1 mm (``fine``) and 2 mm (``coarse``).

    Each level holds ``t1`` (white matter ≈ 1), ``gm``, ``wm`` and ``icv``
    (intracranial occupancy); the coarse level also holds ``d_out`` (mm from the
    outer CSF into the brain) and ``d_vent`` (signed mm from the ventricle surface).
    ``origin`` is the MNI position of voxel 0 of each level.
    """

    fine: dict[str, np.ndarray]
    coarse: dict[str, np.ndarray]
    origin_fine: np.ndarray
    origin_coarse: np.ndarray
    i_gm: float
    i_wm: float
    i_csf: float


def _block_mean(a: np.ndarray) -> np.ndarray:
    s = [n // 2 * 2 for n in a.shape]
    a = a[: s[0], : s[1], : s[2]]
    return a.reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5), dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _template() -> _Template:
    import nibabel as nib

    folder = _template_dir()
    maps = {}
    affine = None
    for key, name in _TEMPLATE_FILES.items():
        path = folder / name
        if not path.exists():
            raise RuntimeError(f"{path}: MNI152 template not found in the installed nilearn")
        img = nib.load(str(path))
        maps[key] = np.asarray(img.dataobj, dtype=np.float32)
        affine = img.affine
    assert affine is not None and np.allclose(np.diag(affine)[:3], 1.0), "template is expected at 1 mm RAS"
    icv = (maps["t1"] > 0).astype(np.float32)
    lo = np.maximum(np.argwhere(icv).min(axis=0) - 10, 0)
    hi = np.argwhere(icv).max(axis=0) + 11
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    gm, wm = maps["gm"][crop] / 255.0, maps["wm"][crop] / 255.0
    t1, icv = maps["t1"][crop], icv[crop]
    i_wm = float(np.median(t1[wm > 0.9]))
    t1 = t1 / i_wm
    fine = {"t1": t1, "gm": gm, "wm": wm, "icv": icv}
    coarse = {k: _block_mean(v) for k, v in fine.items()}
    # Ventricles: CSF enclosed by brain tissue (holes in the 2 mm brain mask), largest component.
    brain2 = (coarse["gm"] + coarse["wm"]) >= 0.5
    holes = ndi.binary_fill_holes(brain2) & ~brain2
    lab, n = ndi.label(holes)
    sizes = ndi.sum_labels(holes, lab, index=np.arange(1, n + 1))
    vent = lab == (1 + int(np.argmax(sizes)))
    coarse["d_vent"] = (2.0 * (ndi.distance_transform_edt(~vent) - ndi.distance_transform_edt(vent))).astype(
        np.float32
    )
    coarse["d_out"] = (2.0 * ndi.distance_transform_edt(brain2 | vent)).astype(np.float32)
    origin_fine = affine[:3, 3] + lo
    return _Template(
        fine=fine,
        coarse=coarse,
        origin_fine=origin_fine,
        origin_coarse=origin_fine + 0.5,  # centre of the first 2×2×2 block
        i_gm=float(np.median(t1[gm > 0.7])),
        i_wm=1.0,
        i_csf=float(np.median(t1[(icv > 0) & (gm + wm < 0.1)])),
    )


@functools.lru_cache(maxsize=2)
def _sources(spacing: float) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Template maps low-pass filtered for sampling at ``spacing`` mm: (maps, origin, map spacing)."""
    tpl = _template()
    if spacing >= 2.5:
        maps, origin, step = tpl.coarse, tpl.origin_coarse, 2.0
    else:
        maps, origin, step = tpl.fine, tpl.origin_fine, 1.0
    sigma = 0.4 * spacing / step  # anti-aliasing, in voxels of the source level
    out = {}
    for key in ("t1", "gm", "wm", "icv"):
        out[key] = ndi.gaussian_filter(maps[key], sigma, truncate=3.0) if sigma > 0.45 else maps[key]
    return out, origin, step


@dataclass
class _Subject:
    atrophy: float
    scale: float
    rotation: np.ndarray
    shift: np.ndarray
    warp_mm: float
    vent_base: float  # subject-specific ventricle size offset (mm)
    gamma: float
    gain: float
    bias: float
    noise: float  # Rician noise sigma as a fraction of white matter

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "_Subject":
        u = rng.uniform
        axis = rng.standard_normal(3)
        return cls(
            atrophy=u(0.0, 1.0),
            scale=u(0.95, 1.05),
            rotation=rotation_matrix(axis, np.deg2rad(u(0.0, 5.0))),
            shift=rng.uniform(-3.0, 3.0, 3),
            warp_mm=u(1.5, 3.0),
            vent_base=u(-1.0, 1.5),
            gamma=u(0.85, 1.2),
            gain=u(0.8, 1.25),
            bias=u(0.08, 0.15),
            noise=u(0.02, 0.04),
        )


def _sample(maps: dict[str, np.ndarray], coords: np.ndarray) -> np.ndarray:
    return ndi.map_coordinates(maps, coords, order=1, mode="constant", cval=0.0, prefilter=False)


def generate(size: int, seed: int) -> Phantom:
    """Generate one brain MRI phantom of ``size``³ voxels over a 200 mm field of view.

    The same ``seed`` gives a bit-identical array; the subject's anatomy does not
    depend on ``size``. The first call in a process loads the template (~1–2 s).
    """
    ss = np.random.SeedSequence(seed)
    s_par, s_lat, s_noise = ss.spawn(3)
    s = _Subject.sample(np.random.default_rng(s_par))
    lat_rng = np.random.default_rng(s_lat)
    warp = [LatticeField(lat_rng, FOV_MM + 80.0, 40.0) for _ in range(3)]
    bias = LatticeField(lat_rng, FOV_MM + 80.0, 70.0)

    tpl = _template()
    grid = Grid(size, FOV_MM / size)
    sp = grid.spacing
    ax = grid.axis
    x, y, z = grid.xyz
    # target → template mapping: q = centre + R (p / scale) + shift + smooth warp
    p = (x / s.scale, y / s.scale, z / s.scale)
    q = []
    for i in range(3):
        r = s.rotation[i]
        qi = r[0] * p[0] + r[1] * p[1] + r[2] * p[2]
        qi = qi + (FOV_CENTRE_MNI[i] + s.shift[i]) + s.warp_mm * warp[i].on_grid(ax, ax, ax)
        q.append(qi.astype(np.float32))

    src, origin, step = _sources(sp)
    idx = np.stack([(q[i] - origin[i]) / step for i in range(3)])
    t1, gm, wm, icv = (_sample(src[k], idx) for k in ("t1", "gm", "wm", "icv"))
    idx2 = np.stack([(q[i] - tpl.origin_coarse[i]) / 2.0 for i in range(3)])
    d_out = _sample(tpl.coarse["d_out"], idx2)
    d_vent = ndi.map_coordinates(tpl.coarse["d_vent"], idx2, order=1, mode="nearest", prefilter=False)
    del idx, idx2, q

    # atrophy: cortical thinning from the outer surface, ventricular enlargement
    ramp = 2.0  # mm; fixed so that the anatomy does not depend on the voxel size
    depth = np.maximum(d_out - 1.0, 0.0)  # mm from the outer brain surface
    removed_gm = gm * np.clip((s.atrophy * CORTEX_THINNING_MM - depth) / ramp, 0.0, 1.0)
    gm1 = gm - removed_gm
    grow = s.atrophy * VENTRICLE_GROWTH_MM + s.vent_base
    vent = np.clip(0.5 + (grow - d_vent) / ramp, 0.0, 1.0) * (icv > 0.5)
    gm2, wm2 = gm1 * (1.0 - vent), wm * (1.0 - vent)
    d_gm, d_wm = gm - gm2, wm - wm2
    t1 = t1 - d_gm * (tpl.i_gm - tpl.i_csf) - d_wm * (tpl.i_wm - tpl.i_csf)

    # scanner: contrast, bias field, gain, Rician noise
    t1 = np.maximum(t1, 0.0) ** s.gamma
    t1 *= np.exp(s.bias * bias.on_grid(ax, ax, ax))
    signal = (1000.0 * s.gain) * t1
    sigma = 1000.0 * s.gain * s.noise
    nrng = np.random.default_rng(s_noise)
    n1 = nrng.standard_normal(signal.shape, dtype=np.float32)
    n2 = nrng.standard_normal(signal.shape, dtype=np.float32)
    img = np.sqrt((signal + sigma * n1) ** 2 + (sigma * n2) ** 2).astype(np.float32)

    voxel_ml = sp**3 / 1000.0
    atrophy = round(s.atrophy, 4)
    factors: dict[str, float | int | str] = {
        "brain_volume_ml": float((gm2 + wm2).sum(dtype=np.float64)) * voxel_ml,
        "gm_volume_ml": float(gm2.sum(dtype=np.float64)) * voxel_ml,
        "wm_volume_ml": float(wm2.sum(dtype=np.float64)) * voxel_ml,
        "ventricle_volume_ml": float(vent.sum(dtype=np.float64)) * voxel_ml,
        "intracranial_volume_ml": float(icv.sum(dtype=np.float64)) * voxel_ml,
        "atrophy": atrophy,
        "label": atrophy_class(atrophy),
    }
    csf = np.maximum(icv - gm2 - wm2, 0.0)
    masks = {
        "brain": (gm2 + wm2) >= 0.5,
        "gm": (gm2 >= wm2) & (gm2 >= csf) & (icv >= 0.5),
        "wm": (wm2 > gm2) & (wm2 >= csf) & (icv >= 0.5),
        "ventricles": vent >= 0.5,
        "intracranial": icv >= 0.5,
    }
    origin_world = tuple(float(FOV_CENTRE_MNI[i] + ax[0]) for i in range(3))
    return Phantom(kind=KIND, array=img, spacing=(sp, sp, sp), factors=factors, masks=masks, origin=origin_world)
