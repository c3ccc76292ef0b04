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

Extra volumes of the same grid:

* ``tissue``: label map (int16, :data:`TISSUE_CLASSES`) from the tissue masks —
  0 background (outside the intracranial volume; the phantom is skull-stripped,
  so there is no skull or scalp class), 1 CSF outside the ventricles, 2 grey
  matter, 3 white matter, 4 lateral ventricles;
* ``t2``: a T2-weighted contrast of the same anatomy — the partial-volume
  tissue fractions times T2-like signals (CSF 1, grey matter 0.30–0.42, white
  matter 0.62–0.78 of grey), the same bias field, its own gain, and Rician noise
  of the same relative level (to CSF) drawn independently of the T1's.

Optional lesions (``lesions``, see :mod:`.lesions`): white-matter hyperintensities
(``wmh``: small ovoid periventricular or deep white-matter lesions, T2 hyperintense, T1
hypointense) and a ``tumour`` (enhancing rim, necrotic core, optional oedema), painted onto
the tissue signals before contrast, bias field and noise, so the image and ``t2`` show them
consistently; they add the volumes ``lesion`` (int16 instance map), ``normal`` and
``normal_t2`` (image and ``t2`` without lesions: bit for bit the volumes generated without
them) and leave factors, masks and ``tissue`` (the subject's normal anatomy) unchanged.

The grid is ``size``³ voxels over the 200 mm field of view by default; any shape and
(anisotropic) spacing samples the same anatomy (the template is low-pass filtered per axis).

Registration ground truth (``displacement``, see :mod:`.deformation` for the convention): the
volumes ``disp_x``, ``disp_y``, ``disp_z`` (float32, mm) hold, at every voxel, the template point
it was sampled from minus its world position: q = affine · (i, j, k, 1) + disp, in MNI152 mm.
:func:`subject_map` gives the same map exactly at any point, :func:`template` the template on
a phantom grid, :func:`subject_parameters` the subject's drawn parameters.

Longitudinal pairs (``longitudinal``): the subject's follow-up after ``interval_years`` drawn
uniformly in :data:`FOLLOWUP_YEARS` (1–5 years), with the atrophy factor grown at a
subject-specific rate drawn uniformly in :data:`ATROPHY_RATE_PER_YEAR` (0.02–0.08 per year, i.e.
cortical thinning of 0.05–0.2 mm and ventricular boundary growth of 0.1–0.4 mm per year):
``atrophy_followup`` = atrophy + rate · interval (it may pass 1: the cortex keeps thinning by
2.5 mm and the ventricles growing by 5 mm per unit). Everything else is the baseline's (anatomy,
deformation, bias field, contrast, gain); the noise is drawn anew (stream
:data:`LONGITUDINAL_STREAM`). Atrophy is a change of tissue in template space (grey matter
becomes CSF, tissue becomes ventricular CSF), not a deformation: baseline and follow-up share
one displacement field and their voxels correspond one to one (the true displacement between
them is zero); the progression is the difference of ``tissue`` and ``followup_tissue``. Volumes
``followup`` (T1), ``followup_t2`` and ``followup_tissue``; factors
:data:`LONGITUDINAL_FACTORS`, the follow-up's tissue volumes measured like the baseline's.

Healthy self (``healthy``): the same subject and scan at atrophy 0 — the same anatomy (with the
subject's own ventricle offset), deformation, bias field, contrast, gain and the same noise
realisation (the image's noise streams), so ``image − healthy`` is the effect of the atrophy
alone and exactly 0 wherever it leaves the partial-volume tissue fractions unchanged (the noise
cancels). Volumes ``healthy`` (T1), ``healthy_t2`` and ``healthy_tissue``; factors
:data:`HEALTHY_FACTORS`, its tissue volumes measured like the subject's (brain and grey matter
larger, ventricles smaller; the intracranial volume is the same).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from medgen.data.phantoms import deformation
from medgen.data.phantoms import lesions as lesion_lib
from medgen.data.phantoms.noise import LatticeField
from medgen.data.phantoms.phantom import Phantom
from medgen.data.phantoms.shapes import request_grid, rotation_matrix

KIND = "brain-mri"
FOV_MM = 200.0
#: World (MNI) position of the centre of the field of view, mm.
FOV_CENTRE_MNI = (0.0, -17.0, 5.0)
#: Upper bounds (exclusive) of atrophy for classes 0, 1, 2; ≥ the last is class 3.
ATROPHY_THRESHOLDS = (0.25, 0.5, 0.75)
CORTEX_THINNING_MM = 2.5  # at atrophy 1
VENTRICLE_GROWTH_MM = 5.0  # at atrophy 1
#: Longitudinal follow-up: interval after the baseline, drawn uniformly in this range (years), and the
#: subject's atrophy rate, the increase of the atrophy factor per year, drawn uniformly in this range: the
#: cortex thins by rate · 2.5 mm and the ventricles' boundary moves out by rate · 5 mm per year.
FOLLOWUP_YEARS = (1.0, 5.0)
ATROPHY_RATE_PER_YEAR = (0.02, 0.08)
#: Spawn key, under the volume's seed, of the follow-up's draws: + (0,) interval and rate, + (1,) its T1
#: noise, + (2,) its T2 noise (the other streams are (0,)…(4,), domains' (100, 1), lesions' (200,)).
LONGITUDINAL_STREAM = (300,)
_FOLLOWUP_VOLUMES = ("brain_volume_ml", "gm_volume_ml", "wm_volume_ml", "ventricle_volume_ml")
#: Factors a longitudinal phantom adds (the follow-up's tissue volumes are measured like the baseline's).
LONGITUDINAL_FACTORS = (
    "interval_years", "atrophy_rate_per_year", "atrophy_followup", "label_followup",
    *(f"{name}_followup" for name in _FOLLOWUP_VOLUMES),
)
#: The named volumes a longitudinal phantom adds.
LONGITUDINAL_VOLUMES = ("followup", "followup_tissue", "followup_t2")
#: Factors and named volumes of the healthy self (the subject at atrophy 0, measured like the subject).
HEALTHY_FACTORS = tuple(f"{name}_healthy" for name in _FOLLOWUP_VOLUMES)
HEALTHY_VOLUMES = ("healthy", "healthy_tissue", "healthy_t2")

#: Classes of the ``tissue`` label map (the phantom is skull-stripped: no skull or scalp).
BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER, VENTRICLES = range(5)
TISSUE_CLASSES = {
    BACKGROUND: "background (outside the intracranial volume)",
    CSF: "cerebrospinal fluid outside the ventricles (sulci, cisterns)",
    GREY_MATTER: "grey matter",
    WHITE_MATTER: "white matter",
    VENTRICLES: "lateral ventricles (cerebrospinal fluid; they enlarge with atrophy)",
}

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
def _sources(spacing: tuple[float, float, float]) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Template maps low-pass filtered for sampling at ``spacing`` mm (per axis): (maps, origin, map spacing)."""
    tpl = _template()
    if min(spacing) >= 2.5:
        maps, origin, step = tpl.coarse, tpl.origin_coarse, 2.0
    else:
        maps, origin, step = tpl.fine, tpl.origin_fine, 1.0
    # anti-aliasing, in voxels of the source level (the template axes are the grid's, up to 5°)
    sigma = [0.4 * sp / step if 0.4 * sp / step > 0.45 else 0.0 for sp in spacing]
    out = {}
    for key in ("t1", "gm", "wm", "icv"):
        out[key] = ndi.gaussian_filter(maps[key], sigma, truncate=3.0) if max(sigma) > 0 else maps[key]
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
    noise: float  # Rician noise sigma as a fraction of white matter (T1) or CSF (T2)
    t2_gm: float  # T2 grey-matter signal relative to CSF
    t2_wm: float  # T2 white-matter signal relative to grey matter
    t2_gain: float

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
            # drawn last, so that the T1 volumes are those of sets made before T2 existed
            t2_gm=u(0.3, 0.42),
            t2_wm=u(0.62, 0.78),
            t2_gain=u(0.8, 1.25),
        )


def _sample(maps: dict[str, np.ndarray], coords: np.ndarray) -> np.ndarray:
    return ndi.map_coordinates(maps, coords, order=1, mode="constant", cval=0.0, prefilter=False)


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``signal`` plus complex Gaussian noise of ``sigma`` per channel (float32)."""
    n1 = rng.standard_normal(signal.shape, dtype=np.float32)
    n2 = rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt((signal + sigma * n1) ** 2 + (sigma * n2) ** 2).astype(np.float32)


def _sample_template(q: Sequence[np.ndarray], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Template maps at the template points ``q`` (x, y, z arrays, MNI mm) for a grid of ``spacing`` mm:
    (t1, gm, wm, icv, d_out, d_vent)."""
    tpl = _template()
    src, origin, step = _sources(spacing)
    idx = np.stack([(q[i] - origin[i]) / step for i in range(3)])
    t1, gm, wm, icv = (_sample(src[k], idx) for k in ("t1", "gm", "wm", "icv"))
    idx2 = np.stack([(q[i] - tpl.origin_coarse[i]) / 2.0 for i in range(3)])
    d_out = _sample(tpl.coarse["d_out"], idx2)
    d_vent = ndi.map_coordinates(tpl.coarse["d_vent"], idx2, order=1, mode="nearest", prefilter=False)
    return t1, gm, wm, icv, d_out, d_vent


def _atrophied(
    t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, icv: np.ndarray, d_out: np.ndarray, d_vent: np.ndarray,
    atrophy: float, vent_base: float,
) -> tuple[np.ndarray, ...]:
    """The anatomy at ``atrophy`` (a label change in template space, not a deformation): cortical thinning
    from the outer surface and ventricular enlargement. Returns (t1, gm, wm, ventricles, csf, growth mm)."""
    tpl = _template()
    atrophy, vent_base = float(atrophy), float(vent_base)
    ramp = 2.0  # mm; fixed so that the anatomy does not depend on the voxel size
    depth = np.maximum(d_out - 1.0, 0.0)  # mm from the outer brain surface
    removed_gm = gm * np.clip((atrophy * CORTEX_THINNING_MM - depth) / ramp, 0.0, 1.0)
    gm1 = gm - removed_gm
    grow = atrophy * VENTRICLE_GROWTH_MM + vent_base
    vent = np.clip(0.5 + (grow - d_vent) / ramp, 0.0, 1.0) * (icv > 0.5)
    gm2, wm2 = gm1 * (1.0 - vent), wm * (1.0 - vent)
    d_gm, d_wm = gm - gm2, wm - wm2
    t1 = t1 - d_gm * (tpl.i_gm - tpl.i_csf) - d_wm * (tpl.i_wm - tpl.i_csf)
    csf = np.maximum(icv - gm2 - wm2, 0.0)
    return t1, gm2, wm2, vent, csf, grow


def _measured(
    gm2: np.ndarray, wm2: np.ndarray, vent: np.ndarray, icv: np.ndarray, csf: np.ndarray, voxel_ml: float
) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """(tissue volumes in ml, masks, ``tissue`` label map) of an anatomy's partial-volume fractions."""
    volumes_ml = {
        "brain_volume_ml": float((gm2 + wm2).sum(dtype=np.float64)) * voxel_ml,
        "gm_volume_ml": float(gm2.sum(dtype=np.float64)) * voxel_ml,
        "wm_volume_ml": float(wm2.sum(dtype=np.float64)) * voxel_ml,
        "ventricle_volume_ml": float(vent.sum(dtype=np.float64)) * voxel_ml,
        "intracranial_volume_ml": float(icv.sum(dtype=np.float64)) * voxel_ml,
    }
    masks = {
        "brain": (gm2 + wm2) >= 0.5,
        "gm": (gm2 >= wm2) & (gm2 >= csf) & (icv >= 0.5),
        "wm": (wm2 > gm2) & (wm2 >= csf) & (icv >= 0.5),
        "ventricles": vent >= 0.5,
        "intracranial": icv >= 0.5,
    }
    tissue = np.full(gm2.shape, BACKGROUND, dtype=np.int16)
    tissue[masks["intracranial"]] = CSF
    tissue[masks["gm"]] = GREY_MATTER
    tissue[masks["wm"]] = WHITE_MATTER
    tissue[masks["ventricles"]] = VENTRICLES
    return volumes_ml, masks, tissue


def _streams(seed: int) -> tuple[np.random.SeedSequence, ...]:
    # the first three as before T2 existed, the first four as before lesions existed
    return tuple(np.random.SeedSequence(seed).spawn(5))


def _warp_fields(s_lat: np.random.SeedSequence) -> tuple[list[LatticeField], LatticeField]:
    lat_rng = np.random.default_rng(s_lat)
    warp = [LatticeField(lat_rng, FOV_MM + 80.0, 40.0) for _ in range(3)]
    bias = LatticeField(lat_rng, FOV_MM + 80.0, 70.0)
    return warp, bias


def _progression(seed: int) -> tuple[float, float]:
    """(interval in years, atrophy rate per year) of subject ``seed``'s follow-up, from its own stream."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=LONGITUDINAL_STREAM + (0,)))
    return float(rng.uniform(*FOLLOWUP_YEARS)), float(rng.uniform(*ATROPHY_RATE_PER_YEAR))


def subject_parameters(seed: int) -> dict[str, float | list]:
    """The ground-truth parameters of brain subject ``seed`` (as :func:`generate` draws them).

    ``atrophy`` (unrounded), ``ventricle_offset_mm`` (subject-specific ventricle size: its boundary
    moves by ``atrophy`` · 5 mm + this), the deformation (``scale``, ``rotation`` 3×3, ``shift_mm``,
    ``warp_mm``; see :func:`subject_map`) and the longitudinal follow-up (``interval_years``,
    ``atrophy_rate_per_year``, ``atrophy_followup`` = atrophy + rate · interval).
    """
    s = _Subject.sample(np.random.default_rng(_streams(seed)[0]))
    years, rate = _progression(seed)
    return {
        "atrophy": s.atrophy,
        "ventricle_offset_mm": s.vent_base,
        "scale": s.scale,
        "rotation": s.rotation.tolist(),
        "shift_mm": s.shift.tolist(),
        "warp_mm": s.warp_mm,
        "interval_years": years,
        "atrophy_rate_per_year": rate,
        "atrophy_followup": s.atrophy + rate * years,
    }


def subject_map(seed: int) -> deformation.SubjectMap:
    """The exact map from subject ``seed``'s world coordinates (the phantom's affine, any grid) to the
    template's (MNI mm): what the ``disp_*`` volumes sample (see :mod:`.deformation`)."""
    s_par, s_lat = _streams(seed)[:2]
    s = _Subject.sample(np.random.default_rng(s_par))
    warp, _ = _warp_fields(s_lat)
    return deformation.SubjectMap(
        centre=np.asarray(FOV_CENTRE_MNI, dtype=np.float64), rotation=s.rotation, scale=s.scale,
        shift=np.asarray(s.shift, dtype=np.float64), warp_mm=s.warp_mm, warp=tuple(warp),
    )


def template(
    size: int | tuple[int, int, int],
    spacing: float | tuple[float, float, float] | None = None,
    atrophy: float = 0.0,
    ventricle_offset_mm: float = 0.0,
    filter_spacing: float | tuple[float, float, float] | None = None,
) -> Phantom:
    """The template itself on a phantom grid: no deformation (displacement 0), no bias field, no noise.

    The grid and affine are those of :func:`generate` (same ``size`` and ``spacing``), so voxel
    positions are template (MNI) mm. ``array`` is the T1-like tissue signal × 1000 (white matter
    1000); ``tissue``, masks and volume factors as for a subject. ``atrophy`` and
    ``ventricle_offset_mm`` apply a subject's atrophy (:func:`subject_parameters`) in template
    space: warped with that subject's ``disp_*`` field, its ``tissue`` is the subject's.
    ``filter_spacing``: low-pass filter the template maps as for voxels of this size in mm (one
    value or one per axis; default the grid's spacing): a subject's spacing renders the detail of
    that subject on a finer grid, for warping with nearest neighbours.
    """
    grid = request_grid(size, spacing, FOV_MM)
    detail = grid.spacing if filter_spacing is None else request_grid(1, filter_spacing, FOV_MM).spacing
    x, y, z = grid.xyz
    q = [np.broadcast_to((FOV_CENTRE_MNI[i] + c).astype(np.float32), grid.shape) for i, c in enumerate((x, y, z))]
    t1, gm, wm, icv, d_out, d_vent = _sample_template(q, detail)
    t1, gm2, wm2, vent, csf, _ = _atrophied(t1, gm, wm, icv, d_out, d_vent, atrophy, ventricle_offset_mm)
    volumes_ml, masks, tissue = _measured(gm2, wm2, vent, icv, csf, grid.voxel_ml)
    factors: dict[str, float | int | str] = {**volumes_ml, "atrophy": float(atrophy), "label": atrophy_class(atrophy)}
    origin = tuple(float(FOV_CENTRE_MNI[i] + grid.axes[i][0]) for i in range(3))
    image = (1000.0 * np.maximum(t1, 0.0)).astype(np.float32)
    return Phantom(kind=KIND, array=image, spacing=grid.spacing, factors=factors, masks=masks,
                   volumes={"tissue": tissue}, origin=origin)


def generate(
    size: int | tuple[int, int, int],
    seed: int,
    spacing: float | tuple[float, float, float] | None = None,
    lesions: Sequence[str] = (),
    displacement: bool = False,
    longitudinal: bool = False,
    healthy: bool = False,
) -> Phantom:
    """Generate one brain MRI phantom of ``size``³ voxels over a 200 mm field of view.

    ``size`` may also be a shape (X, Y, Z) and ``spacing`` a voxel size in mm (one value
    or one per axis; default 200 mm over the largest axis): the grid is centred on the
    same anatomy. The same ``seed`` gives a bit-identical array; the subject's anatomy
    does not depend on the grid. The first call in a process loads the template (~1–2 s).

    Volumes: ``tissue`` (label map of :data:`TISSUE_CLASSES`) and ``t2`` (T2-weighted
    contrast of the same anatomy, bias field and noise model, with its own noise).

    ``lesions``: kinds among ``wmh``, ``tumour`` (:mod:`.lesions`), painted last from their
    own random stream on both contrasts; adds the volumes ``lesion``, ``normal`` and
    ``normal_t2`` and the factors ``abnormal``, ``lesion_count``, ``lesion_ml``, ``lesions``.

    ``displacement``: adds the volumes ``disp_x``, ``disp_y``, ``disp_z`` (float32, mm): the
    displacement from each voxel's world position to the template point it was sampled from
    (:mod:`.deformation`). ``longitudinal``: adds the follow-up (see the module docstring): the
    volumes ``followup``, ``followup_tissue``, ``followup_t2`` and the factors of
    :data:`LONGITUDINAL_FACTORS`; not with ``lesions`` (ValueError). ``healthy``: adds the
    healthy self, the same subject and scan (noise included) at atrophy 0 (see the module
    docstring): the volumes ``healthy``, ``healthy_tissue``, ``healthy_t2`` and the factors of
    :data:`HEALTHY_FACTORS`; not with ``lesions`` (ValueError). None of them changes anything
    else: the other arrays and factors are bit for bit those generated without them.
    """
    lesions = lesion_lib.check_kinds(KIND, lesions)
    if longitudinal and lesions:
        raise ValueError("a longitudinal brain phantom cannot have lesions (lesion progression is not modelled)")
    if healthy and lesions:
        raise ValueError("a brain phantom with a healthy self cannot have lesions (image - healthy is the effect "
                         "of atrophy alone)")
    s_par, s_lat, s_noise, s_noise_t2, s_les = _streams(seed)
    s = _Subject.sample(np.random.default_rng(s_par))
    warp, bias = _warp_fields(s_lat)

    tpl = _template()
    grid = request_grid(size, spacing, FOV_MM)
    axes = grid.axes
    x, y, z = grid.xyz
    origin_world = tuple(float(FOV_CENTRE_MNI[i] + axes[i][0]) for i in range(3))
    # target → template mapping: q = centre + R (p / scale) + shift + smooth warp
    p = (x / s.scale, y / s.scale, z / s.scale)
    q = []
    disp = {}
    for i in range(3):
        r = s.rotation[i]
        qi = r[0] * p[0] + r[1] * p[1] + r[2] * p[2]
        qi = qi + (FOV_CENTRE_MNI[i] + s.shift[i]) + s.warp_mm * warp[i].on_grid(*axes)
        if displacement:  # template point minus the voxel's world position (the affine's)
            world = origin_world[i] + np.arange(grid.shape[i], dtype=np.float64) * grid.spacing[i]
            world = world.reshape([-1 if a == i else 1 for a in range(3)])
            disp[deformation.DISPLACEMENT_VOLUMES[i]] = (qi - world).astype(np.float32)
        q.append(qi.astype(np.float32))

    t1, gm, wm, icv, d_out, d_vent = _sample_template(q, grid.spacing)
    del q
    t1_base, gm2, wm2, vent, csf, grow = _atrophied(t1, gm, wm, icv, d_out, d_vent, s.atrophy, s.vent_base)

    # scanner: contrast, bias field, gain, Rician noise
    coil = np.exp(s.bias * bias.on_grid(*axes))

    def t1_image(t1_tissue: np.ndarray, stream: np.random.SeedSequence = s_noise) -> np.ndarray:
        t1_w = np.maximum(t1_tissue, 0.0) ** s.gamma
        t1_w *= coil
        signal = (1000.0 * s.gain) * t1_w
        return _rician(signal, 1000.0 * s.gain * s.noise, np.random.default_rng(stream))

    def t2_image(t2_tissue: np.ndarray, stream: np.random.SeedSequence = s_noise_t2) -> np.ndarray:
        t2_w = t2_tissue * coil
        return _rician((1000.0 * s.t2_gain) * t2_w, 1000.0 * s.t2_gain * s.noise, np.random.default_rng(stream))

    img = t1_image(t1_base)
    # T2: tissue fractions times T2-weighted signals (CSF bright, grey > white), same coil and noise model
    t2 = csf + s.t2_gm * (gm2 + s.t2_wm * wm2)
    img_t2 = t2_image(t2)
    volumes = {}

    # lesions: own random stream, painted last onto the tissue signals before contrast, coil and
    # noise (the same noise is drawn again); factors, masks and tissue are the normal anatomy
    records: list[dict] = []
    if lesions:
        d_ventricle = d_vent - grow  # mm from the (enlarged) ventricles' surface

        def site(name: str, r: float) -> np.ndarray:
            white = wm2 >= 0.6
            if name == "periventricular":  # within 10 mm of the ventricles
                return white & (d_ventricle > 0.5 * r + 1.0) & (d_ventricle < 0.5 * r + 10.0) & (d_out > r + 4.0)
            if name == "deep-white-matter":
                return white & (d_ventricle >= 0.5 * r + 10.0) & (d_out > r + 4.0)
            if name == "brain":  # tumours: inside the brain, clear of its surface
                return (gm2 + wm2 >= 0.7) & (d_out > r + 4.0) & (d_ventricle > 0.3 * r)
            if name == "brain-outer":  # where a large tumour finds no room inside: may reach the surface
                return (gm2 + wm2 >= 0.7) & (d_out > 0.5 * r)
            raise ValueError(f"no brain-mri lesion site {name!r}")

        contrast = {
            "t1": {"wm": tpl.i_wm, "gm": tpl.i_gm, "csf": tpl.i_csf},
            "t2": {"wm": s.t2_gm * s.t2_wm, "gm": s.t2_gm, "csf": 1.0},
        }
        t1_les, t2_les = t1_base.copy(), t2.copy()
        instance, records = lesion_lib.insert(
            np.random.default_rng(s_les), KIND, lesions, grid, site, {"t1": t1_les, "t2": t2_les}, {"wm": wm2},
            contrast=contrast,
        )
        volumes = {"lesion": instance, "normal": img, "normal_t2": img_t2}
        img, img_t2 = t1_image(t1_les), t2_image(t2_les)
        del t1_les, t2_les

    voxel_ml = grid.voxel_ml
    atrophy = round(s.atrophy, 4)
    volumes_ml, masks, tissue = _measured(gm2, wm2, vent, icv, csf, voxel_ml)
    factors: dict[str, float | int | str] = {**volumes_ml, "atrophy": atrophy, "label": atrophy_class(atrophy)}
    if lesions:
        factors.update(lesion_lib.factors(records, voxel_ml))

    if longitudinal:  # the same subject and scanner after the interval: more atrophy, new noise
        years, rate = _progression(seed)
        atrophy_fu = s.atrophy + rate * years
        t1_fu, gm_fu, wm_fu, vent_fu, csf_fu, _ = _atrophied(t1, gm, wm, icv, d_out, d_vent, atrophy_fu, s.vent_base)
        ml_fu, _, tissue_fu = _measured(gm_fu, wm_fu, vent_fu, icv, csf_fu, voxel_ml)
        noise_fu = [np.random.SeedSequence(seed, spawn_key=LONGITUDINAL_STREAM + (k,)) for k in (1, 2)]
        volumes["followup"] = t1_image(t1_fu, noise_fu[0])
        volumes["followup_tissue"] = tissue_fu
        volumes["followup_t2"] = t2_image(csf_fu + s.t2_gm * (gm_fu + s.t2_wm * wm_fu), noise_fu[1])
        atrophy_fu = round(atrophy_fu, 4)
        factors.update({
            "interval_years": round(years, 4),
            "atrophy_rate_per_year": round(rate, 4),
            "atrophy_followup": atrophy_fu,
            "label_followup": atrophy_class(atrophy_fu),
            **{f"{name}_followup": ml_fu[name] for name in _FOLLOWUP_VOLUMES},
        })
        del t1_fu, gm_fu, wm_fu, vent_fu, csf_fu
    if healthy:  # the same subject and scan at atrophy 0: the image's noise streams, so the noise cancels
        t1_h, gm_h, wm_h, vent_h, csf_h, _ = _atrophied(t1, gm, wm, icv, d_out, d_vent, 0.0, s.vent_base)
        ml_h, _, tissue_h = _measured(gm_h, wm_h, vent_h, icv, csf_h, voxel_ml)
        volumes["healthy"] = t1_image(t1_h)
        volumes["healthy_tissue"] = tissue_h
        volumes["healthy_t2"] = t2_image(csf_h + s.t2_gm * (gm_h + s.t2_wm * wm_h))
        factors.update({f"{name}_healthy": ml_h[name] for name in _FOLLOWUP_VOLUMES})
        del t1_h, gm_h, wm_h, vent_h, csf_h
    volumes.update(disp)
    return Phantom(
        kind=KIND,
        array=img,
        spacing=grid.spacing,
        factors=factors,
        masks=masks,
        volumes={"tissue": tissue, "t2": img_t2, **volumes},
        origin=origin_world,
    )
