"""Writing a phantom data set to a folder: what ``medgen phantoms`` does, as a library call.

``OUT/<kind>-<i:04d>.nii.gz`` (CT as int16 Hounsfield units, MRI as float32), each
subject's extra voxel-aligned volumes in sub-folders (``OUT/tissue/<id>.nii.gz``, the
int16 tissue label map; for brain MRI also ``OUT/t2/<id>.nii.gz``, a T2-weighted
contrast, float32), ``OUT/manifest.csv`` (id, file, kind, label, the ground-truth
factors, then one column per extra volume holding its relative path) and
``OUT/phantoms.json`` (how the set was made, and under ``volumes`` the extra volumes:
kind ``label`` with its ``classes``, or ``intensity``; ``medgen preprocess`` carries
them into the data set). Volume i depends only on (kind, grid, seed, i, nodules, lesions), so
``n=4`` gives the first four volumes of ``n=8``. The grid is ``size``³ voxels, or
``size`` = (X, Y, Z), of ``spacing`` mm (one value or one per axis; default the kind's
field of view over the largest axis). The mosaic ``OUT/mosaic.png`` is drawn by
:func:`medgen.viz.mosaic.save_phantom_set_mosaic` (figures are a higher layer than data).

``domain`` (:mod:`medgen.data.phantoms.domains`) picks the rendering of those same
subjects: ``"A"`` (default) writes exactly what it always did; ``"B"`` writes domain B
as the image (thorax: a second scanner; brain: the T2 contrast, so no ``t2`` volume);
``"both"`` writes A as the image and B as the extra volume ``domain_b``
(``OUT/domain_b/<id>.nii.gz``, CT int16 HU, MRI float32). B and both sets add the
manifest columns ``domain`` (the image's domain) and ``b_<parameter>`` (B's parameters),
and to ``phantoms.json`` ``domain`` and ``domains`` (what A and B are, B's parameters).
The factors and ``label`` are the subject's, measured on its domain-A image, in every domain.

Lesions (:mod:`medgen.data.phantoms.lesions`), for anomaly detection: ``lesions`` (kinds:
thorax-ct ``nodule``, ``emphysema``, ``mass``; brain-mri ``wmh``, ``tumour``) paints lesions
into a share ``abnormal_fraction`` (default 0.5) of the volumes; which ones is decided per
volume seed (:func:`~medgen.data.phantoms.lesions.is_abnormal`), so volume i is the same for
any ``n``. Every volume of such a set gets the extra volumes ``lesion`` (int16 instance map:
0 none, k the k-th visible lesion; all zero for a normal volume) and ``normal`` (the image
without lesions: the lesion-free counterfactual; CT int16 HU, MRI float32; the image itself
for a normal volume), for brain MRI also ``normal_t2`` (the lesion-free ``t2``), and the
manifest columns ``abnormal`` (0/1), ``lesion_count``, ``lesion_ml`` and ``lesions`` (JSON:
per lesion its label, kind, centre x, y, z in voxels, diameter_mm, voxels, ml, visible, ...).
Outside the ``lesion`` map the image equals ``normal`` voxel for voxel. In a domain-B set
``normal`` is the lesion-free subject in domain B (the second scanner's kernel and slabs
spread a lesion's edge a little beyond its map), in a ``both`` set it is domain A's.
``normal=True`` writes lesion-free volumes for training (the images of a set without
lesions) with those columns at 0 and no lesion volumes. A set with lesions and a normal set
of the same ``seed`` share their subjects: train on one seed and test on another.
``phantoms.json`` records ``lesions`` (kinds, abnormal fraction, how volumes are chosen)
or ``normal``; sets made without either are written exactly as before.

Registration and disease progression (brain-mri; :mod:`medgen.data.phantoms.deformation`):
``displacement=True`` writes each subject's displacement to the MNI152 template as three
float32 volumes in mm, ``OUT/disp_x/<id>.nii.gz``, ``disp_y``, ``disp_z`` (manifest columns of
the same names): voxel (i, j, k) of the image (affine A) was sampled from the template point
``A (i, j, k, 1) + disp[i, j, k]`` (MNI152 RAS+ mm). They are recorded in ``phantoms.json``
under ``displacement``, not under ``volumes``, so ``medgen preprocess`` does not carry them
(it would normalise the millimetres). ``longitudinal=True`` writes each subject's follow-up
after ``interval_years`` (uniform in 1–5 years) with more atrophy (the atrophy factor grows at
a subject-specific 0.02–0.08 per year): the volumes ``followup`` (in the image's domain),
``followup_tissue`` and, where the set has ``t2``, ``followup_t2``, all declared under
``volumes`` so preprocess carries them, and the manifest columns ``interval_years``,
``atrophy_rate_per_year``, ``atrophy_followup``, ``label_followup`` and
``<tissue>_volume_ml_followup`` (brain, gm, wm, ventricle); ``phantoms.json`` records
``longitudinal``. ``healthy=True`` writes each subject's healthy self: the same subject and
scan (deformation, bias field, contrast, gain and the same noise realisation) at atrophy 0, so
``image - healthy`` is the atrophy's effect alone and exactly 0 wherever it leaves the tissue
fractions unchanged: the volumes ``healthy`` (in the image's domain), ``healthy_tissue`` and,
where the set has ``t2``, ``healthy_t2``, declared under ``volumes``, and the manifest columns
``<tissue>_volume_ml_healthy`` (brain, gm, wm, ventricle); ``phantoms.json`` records
``healthy``. Neither is made with ``lesions``. Sets made without these options are written
exactly as before.

Breathing (thorax-ct; :mod:`medgen.data.phantoms.thorax_ct`): ``breathing=True`` writes each
subject at a second breathing state: the image is end-inspiration, ``expiration`` (in the image's
domain, int16 HU) the same subject and scan at end-expiration, resampled from it by a known
smooth field (diaphragm rises by ``breathing_cc_mm``, 10–20 mm, anterior chest wall moves in by
``breathing_ap_mm``, 2–6 mm, spine rigid) with new noise, and ``expiration_tissue`` its tissue
map, both declared under ``volumes``; the true displacement between the states is written as
``breath_x``, ``breath_y``, ``breath_z`` (float32, mm along the world axes, on the image's grid):
``expiration(p) = image(p + u(p))``, the pull-back convention of ``medgen register`` with
MOVING the image and FIXED ``expiration`` (in voxels: u / spacing). Like the brain's displacement
volumes they are listed in the manifest and recorded in ``phantoms.json`` under ``breathing``,
not under ``volumes``, so preprocess does not carry them. Manifest columns ``breathing_cc_mm``,
``breathing_ap_mm`` and ``lung_volume_ml_expiration``. Not made with ``lesions``; with
``nodules`` the nodules move with the lungs.

Example::

    rows = write_phantom_set("thorax-ct", n=8, size=64, seed=0, out="phantoms/")
    rows = write_phantom_set("brain-mri", n=8, size=(64, 64, 40), seed=0, out="brains/", spacing=(0.8, 0.8, 2.5))
    rows = write_phantom_set("thorax-ct", n=8, size=64, seed=2, out="pairs/", domain="both")
    rows = write_phantom_set("thorax-ct", n=64, size=64, seed=0, out="normal/", normal=True)
    rows = write_phantom_set("thorax-ct", n=32, size=64, seed=1, out="test/", lesions=("nodule", "mass"))
    rows = write_phantom_set("brain-mri", n=16, size=64, seed=3, out="pairs/", displacement=True, longitudinal=True)
    rows = write_phantom_set("brain-mri", n=16, size=64, seed=4, out="healthy/", healthy=True)
    rows = write_phantom_set("thorax-ct", n=16, size=64, seed=5, out="breathing/", breathing=True)
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Sequence

from medgen.core.errors import RunFailed, UsageError
from medgen.core.fileio import atomic_write_json
from medgen.core.tables import write_csv
from medgen.core.version import __version__

KIND_NAMES = ("thorax-ct", "brain-mri")
MARKER = "phantoms.json"
#: Allowed voxels per axis, and voxel sizes in mm.
SIZE_RANGE = (16, 512)
SPACING_RANGE_MM = (0.1, 100.0)
#: The extra volumes each kind writes (mirrors medgen.data.phantoms.volume_specs, kept light).
VOLUME_NAMES = {"thorax-ct": ("tissue",), "brain-mri": ("tissue", "t2")}
#: Renderings of the subjects (mirrors medgen.data.phantoms.domains, kept light).
DOMAIN_NAMES = ("A", "B", "both")
DOMAIN_B_VOLUME = "domain_b"
B_EXTRA_VOLUME = {"brain-mri": "t2"}
#: Lesion kinds and the volumes a set with lesions adds (mirror medgen.data.phantoms.lesions, kept light).
LESION_KIND_NAMES = {"thorax-ct": ("nodule", "emphysema", "mass"), "brain-mri": ("wmh", "tumour")}
LESION_VOLUME_NAMES = {"thorax-ct": ("lesion", "normal"), "brain-mri": ("lesion", "normal", "normal_t2")}
#: Share of abnormal volumes when ``lesions`` are given without ``abnormal_fraction``.
DEFAULT_ABNORMAL_FRACTION = 0.5
#: Registration and progression ground truth (mirror medgen.data.phantoms.brain_mri and .deformation, kept
#: light): the kinds that have them, the follow-up's and the healthy self's volumes, and the displacement
#: volumes (mm, written and listed in the manifest but not declared under phantoms.json ``volumes``:
#: preprocess cannot carry mm).
DISPLACEMENT_KIND_NAMES = ("brain-mri",)
LONGITUDINAL_VOLUME_NAMES = ("followup", "followup_tissue", "followup_t2")
HEALTHY_VOLUME_NAMES = ("healthy", "healthy_tissue", "healthy_t2")
DISPLACEMENT_VOLUME_NAMES = ("disp_x", "disp_y", "disp_z")
#: Breathing ground truth (mirror medgen.data.phantoms.thorax_ct, kept light): the kinds that have it, the
#: expiration scan's volumes and the displacement between the states (mm; like the disp_* volumes, not
#: declared under phantoms.json ``volumes``).
BREATHING_KIND_NAMES = ("thorax-ct",)
BREATHING_VOLUME_NAMES = ("expiration", "expiration_tissue")
BREATH_VOLUME_NAMES = ("breath_x", "breath_y", "breath_z")


def volume_names(
    kind: str,
    domain: str = "A",
    lesions: bool = False,
    longitudinal: bool = False,
    healthy: bool = False,
    breathing: bool = False,
) -> tuple[str, ...]:
    """The extra volumes a ``domain`` set of ``kind`` writes and declares (a B set's image is the brain
    ``t2``, with ``lesions`` its ``normal`` the lesion-free ``t2``, with ``longitudinal`` its ``followup``
    the follow-up's ``t2``, with ``healthy`` its ``healthy`` the healthy self's ``t2``; with ``breathing``
    its ``expiration`` is on B's scanner). The displacement volumes come on top
    (:data:`DISPLACEMENT_VOLUME_NAMES`, :data:`BREATH_VOLUME_NAMES`)."""
    names = VOLUME_NAMES[kind] + (LESION_VOLUME_NAMES[kind] if lesions else ())
    names += LONGITUDINAL_VOLUME_NAMES if longitudinal else ()
    names += HEALTHY_VOLUME_NAMES if healthy else ()
    names += BREATHING_VOLUME_NAMES if breathing else ()
    if domain == "B":
        t2_copies = (B_EXTRA_VOLUME.get(kind), "normal_t2", "followup_t2", "healthy_t2")
        return tuple(name for name in names if name not in t2_copies)
    return names + (DOMAIN_B_VOLUME,) if domain == "both" else names


def _triple(value: int | float | Sequence) -> tuple | None:
    """``value`` as three numbers (one number is repeated), or None if it is neither."""
    if isinstance(value, Real):
        return (value,) * 3
    try:
        values = tuple(value)
    except TypeError:
        return None
    return values if len(values) == 3 else None


def check_request(
    kind: str,
    n: int,
    size: int | Sequence[int],
    seed: int,
    nodules: bool = False,
    workers: int = 1,
    spacing: float | Sequence[float] | None = None,
    domain: str = "A",
    lesions: Sequence[str] = (),
    abnormal_fraction: float | None = None,
    normal: bool = False,
    displacement: bool = False,
    longitudinal: bool = False,
    healthy: bool = False,
    breathing: bool = False,
) -> None:
    """UsageError (one line, naming the option) for a phantom set that cannot be made.

    ``size``: S or a shape (X, Y, Z), each in 16..512; ``spacing``: None, or one voxel
    size or three in mm, each in 0.1..100; ``domain``: A, B or both; ``lesions``: lesion
    kinds of ``kind`` (not with ``nodules``); ``abnormal_fraction``: in 0..1, only with
    ``lesions``; ``normal``: neither ``lesions`` nor ``nodules``; ``displacement``,
    ``longitudinal`` and ``healthy``: brain-mri only, the last two not with ``lesions``;
    ``breathing``: thorax-ct only, not with ``lesions``.
    """
    lo, hi = SIZE_RANGE
    if kind not in KIND_NAMES:
        raise UsageError(f"--kind: unknown phantom kind {kind!r}; choose {' or '.join(KIND_NAMES)}")
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if isinstance(size, Real):
        if not (isinstance(size, Integral) and lo <= size <= hi):
            raise UsageError(f"--size must be an integer between {lo} and {hi}, got {size}")
    else:
        shape = _triple(size)
        if shape is None or not all(isinstance(v, Integral) and lo <= v <= hi for v in shape):
            shown = ",".join(map(str, shape)) if shape is not None else size
            raise UsageError(f"--shape must be three integers X,Y,Z, each between {lo} and {hi}, got {shown}")
    if spacing is not None:
        sp = _triple(spacing)
        s_lo, s_hi = SPACING_RANGE_MM
        if sp is None or not all(isinstance(v, Real) and math.isfinite(v) and s_lo <= v <= s_hi for v in sp):
            shown = ",".join(f"{v:g}" if isinstance(v, Real) else str(v) for v in sp) if sp is not None else spacing
            raise UsageError(
                f"--spacing must be one or three voxel sizes SX,SY,SZ in mm, each between {s_lo:g} and {s_hi:g}, "
                f"got {shown}"
            )
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if nodules and kind != "thorax-ct":
        raise UsageError("--nodules is only available for --kind thorax-ct")
    if domain not in DOMAIN_NAMES:
        raise UsageError(f"--domain must be {', '.join(DOMAIN_NAMES[:-1])} or {DOMAIN_NAMES[-1]}, got {domain!r}")
    allowed = LESION_KIND_NAMES[kind]
    if isinstance(lesions, str):
        lesions = (lesions,)
    for name in lesions:
        if name not in allowed:
            raise UsageError(f"--lesions: {name!r} is not a {kind} lesion; choose from {', '.join(allowed)}")
    if normal and (lesions or nodules):
        raise UsageError(f"--normal writes lesion-free volumes; it cannot be combined with "
                         f"{'--lesions' if lesions else '--nodules'}")
    if nodules and lesions:
        raise UsageError(
            "--nodules and --lesions cannot be combined; --lesions nodule inserts nodules with a lesion map"
        )
    if abnormal_fraction is not None:
        if not lesions:
            raise UsageError("--abnormal-fraction needs --lesions (the share of volumes that get lesions)")
        if not (isinstance(abnormal_fraction, Real) and 0.0 <= abnormal_fraction <= 1.0):
            raise UsageError(f"--abnormal-fraction must be between 0 and 1, got {abnormal_fraction}")
    for flag, name in ((displacement, "--displacement"), (longitudinal, "--longitudinal"), (healthy, "--healthy")):
        if flag and kind not in DISPLACEMENT_KIND_NAMES:
            raise UsageError(f"{name} is only available for --kind {' or '.join(DISPLACEMENT_KIND_NAMES)}")
    if longitudinal and lesions:
        raise UsageError("--longitudinal cannot be combined with --lesions (lesion progression is not modelled)")
    if healthy and lesions:
        raise UsageError("--healthy cannot be combined with --lesions (image - healthy is the effect of atrophy alone)")
    if breathing and kind not in BREATHING_KIND_NAMES:
        raise UsageError(f"--breathing is only available for --kind {' or '.join(BREATHING_KIND_NAMES)}")
    if breathing and lesions:
        raise UsageError("--breathing cannot be combined with --lesions (lesions are not moved with the breathing)")


def _previous_files(out: Path) -> list[str]:
    """Volume files (relative paths) listed by a previous phantom set in ``out`` (empty if none)."""
    manifest = out / "manifest.csv"
    if not manifest.exists():
        return []
    names = {name for names in (*VOLUME_NAMES.values(), *LESION_VOLUME_NAMES.values()) for name in names}
    names |= {DOMAIN_B_VOLUME, *LONGITUDINAL_VOLUME_NAMES, *HEALTHY_VOLUME_NAMES, *DISPLACEMENT_VOLUME_NAMES,
              *BREATHING_VOLUME_NAMES, *BREATH_VOLUME_NAMES}
    with manifest.open(newline="") as f:
        return [row[c] for row in csv.DictReader(f) for c in ("file", *sorted(names)) if row.get(c)]


def _prepare_out(out: Path, overwrite: bool) -> list[str]:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if (out / MARKER).exists():
            return _previous_files(out)
        if not overwrite:
            raise UsageError(
                f"{out}: folder is not empty and is not a phantom set; choose another --out or pass --overwrite"
            )
    out.mkdir(parents=True, exist_ok=True)
    return []


def _stored(kind: str, name: str, array: Any) -> Any:
    """``array`` as written: labels and CT images (the image, ``domain_b``, ``normal``, ``expiration``) int16, the
    rest float32."""
    import numpy as np

    hu = kind == "thorax-ct" and name in ("image", DOMAIN_B_VOLUME, "normal", "expiration")
    return array.astype(np.int16) if hu or array.dtype.kind in "iub" else array.astype(np.float32)


def _make_one(
    kind: str,
    size: Any,
    seed: int,
    index: int,
    nodules: bool,
    out: str,
    spacing: Any = None,
    domain: str = "A",
    lesion_kinds: tuple[str, ...] = (),
    abnormal_fraction: float = DEFAULT_ABNORMAL_FRACTION,
    normal: bool = False,
    displacement: bool = False,
    longitudinal: bool = False,
    healthy: bool = False,
    breathing: bool = False,
) -> dict[str, Any]:
    """Generate volume ``index``, write it (in ``domain``) and its extra volumes, and return its
    manifest row (runs in workers)."""
    from medgen.data.io import write_nifti
    from medgen.data.phantoms import domains, generate, lesions, volume_seed

    subject_seed = volume_seed(seed, index)
    abnormal = bool(lesion_kinds) and lesions.is_abnormal(subject_seed, abnormal_fraction)
    ph = generate(kind, size, subject_seed, nodules=nodules, spacing=spacing,
                  lesions=lesion_kinds if abnormal else (), displacement=displacement, longitudinal=longitudinal,
                  healthy=healthy, breathing=breathing)
    if lesion_kinds and not abnormal:
        lesions.add_lesion_free_truth(ph)
    if normal:
        ph.factors.update(lesions.factors([], 0.0))
    vid = f"{kind}-{index:04d}"
    fname = f"{vid}.nii.gz"
    image = domains.render(ph, "B" if domain == "B" else "A", subject_seed)
    write_nifti(Path(out) / fname, _stored(kind, "image", image), ph.affine)
    row = {"id": vid, "file": fname, "kind": kind, "label": ph.factors["label"]}
    row.update({k: v for k, v in ph.factors.items() if k != "label"})
    row.update(domains.manifest_columns(kind, domain))
    names = volume_names(kind, domain, bool(lesion_kinds), longitudinal, healthy, breathing)
    names += (DISPLACEMENT_VOLUME_NAMES if displacement else ()) + (BREATH_VOLUME_NAMES if breathing else ())
    for name in names:
        if name == DOMAIN_B_VOLUME:
            extra = domains.render(ph, "B", subject_seed)
        elif name in ("followup", "healthy") and domain == "B":  # in the image's contrast (brain: T2)
            extra = ph.volumes[f"{name}_t2"]
        elif name == "expiration" and domain == "B":  # on the image's scanner, with its own noise
            from medgen.data.phantoms import thorax_ct

            extra = domains.scan_ct(thorax_ct.expiration_phantom(ph), domains.THORAX_B, subject_seed,
                                    stream=thorax_ct.BREATHING_STREAM + (2,))
        elif name == "normal" and domain == "B":
            if kind == "brain-mri":
                extra = ph.volumes["normal_t2"]
            elif abnormal:  # the same subject without lesions, on the second scanner
                lesion_free = generate(kind, size, subject_seed, spacing=spacing)
                extra = domains.render(lesion_free, "B", subject_seed)
            else:
                extra = image
        else:
            extra = ph.volumes[name]
        relative = f"{name}/{fname}"
        write_nifti(Path(out) / relative, _stored(kind, name, extra), ph.affine)
        row[name] = relative
    return row


def grid_of(kind: str, size: int | Sequence[int], spacing: float | Sequence[float] | None = None) -> tuple:
    """(shape, spacing in mm) of the phantoms of ``kind`` at ``size`` and ``spacing`` (see the module docstring)."""
    from medgen.data.phantoms import brain_mri, thorax_ct
    from medgen.data.phantoms.shapes import request_grid

    grid = request_grid(size, spacing, (thorax_ct if kind == "thorax-ct" else brain_mri).FOV_MM)
    return grid.shape, grid.spacing


def describe_grid(kind: str, size: int | Sequence[int], spacing: float | Sequence[float] | None = None) -> str:
    """``"64^3, 6.25 mm"`` or ``"64x64x40, 0.8x0.8x2.5 mm"``: the grid of a phantom set, for messages."""
    shape, sp = grid_of(kind, size, spacing)
    dims = f"{shape[0]}^3" if len(set(shape)) == 1 else "x".join(str(v) for v in shape)
    mm = f"{sp[0]:g}" if len(set(sp)) == 1 else "x".join(f"{v:g}" for v in sp)
    return f"{dims}, {mm} mm"


def write_phantom_set(
    kind: str,
    n: int,
    size: int | Sequence[int],
    seed: int,
    out: str | os.PathLike,
    *,
    nodules: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    spacing: float | Sequence[float] | None = None,
    domain: str = "A",
    lesions: Sequence[str] = (),
    abnormal_fraction: float | None = None,
    normal: bool = False,
    displacement: bool = False,
    longitudinal: bool = False,
    healthy: bool = False,
    breathing: bool = False,
) -> list[dict[str, Any]]:
    """Write ``n`` phantoms of ``kind`` at ``size``³ (or ``size`` = (X, Y, Z)) voxels of ``spacing``
    mm into ``out``, rendered in ``domain`` (A, B or both; see the module docstring); returns
    the manifest rows.

    ``lesions``: lesion kinds painted into a share ``abnormal_fraction`` (default 0.5) of the
    volumes; ``normal``: a lesion-free set marked as such; ``displacement``: brain only, the
    displacement to the template; ``longitudinal``: brain only, each subject's follow-up scan;
    ``healthy``: brain only, each subject's healthy self; ``breathing``: thorax only, each subject
    at end-expiration with the true displacement between the states (see the module docstring).

    ``out`` must be empty, absent or an earlier phantom set (whose volumes beyond the new
    ``n`` are removed); ``overwrite`` allows another non-empty folder. ``workers``:
    parallel processes. RunFailed if generation fails (e.g. the brain template is missing).
    """
    from tqdm import tqdm

    from medgen.data.phantoms import brain_mri, domains, thorax_ct, volume_specs
    from medgen.data.phantoms import lesions as lesion_lib

    if isinstance(lesions, str):
        lesions = (lesions,)
    check_request(kind, n, size, seed, nodules, workers, spacing, domain, lesions, abnormal_fraction, normal,
                  displacement, longitudinal, healthy, breathing)
    lesion_kinds = lesion_lib.check_kinds(kind, lesions)
    fraction = DEFAULT_ABNORMAL_FRACTION if abnormal_fraction is None else float(abnormal_fraction)
    size = int(size) if isinstance(size, Integral) else tuple(int(v) for v in size)
    spacing = spacing if spacing is None or isinstance(spacing, Real) else tuple(float(v) for v in spacing)
    shape, voxel = grid_of(kind, size, spacing)
    out = Path(out)
    stale = _prepare_out(out, overwrite)
    displacement, longitudinal, healthy = bool(displacement), bool(longitudinal), bool(healthy)
    breathing = bool(breathing)
    jobs = [(kind, size, seed, i, nodules, str(out), spacing, domain, lesion_kinds, fraction, normal, displacement,
             longitudinal, healthy, breathing) for i in range(n)]
    desc = f"phantoms {kind} {describe_grid(kind, size, spacing).split(',')[0]}"
    bar = tqdm(total=n, desc=desc, unit="vol", file=sys.stderr, disable=not progress)
    rows: list[dict[str, Any]] = []
    try:
        if workers == 1:
            for job in jobs:
                rows.append(_make_one(*job))
                bar.update()
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(workers, n)) as pool:
                for row in pool.map(_make_one, *zip(*jobs)):
                    rows.append(row)
                    bar.update()
    except RuntimeError as exc:  # e.g. the MNI template is missing from nilearn
        raise RunFailed(f"{out}: phantom generation failed: {exc}") from exc
    finally:
        bar.close()

    names = volume_names(kind, domain, bool(lesion_kinds), longitudinal, healthy, breathing)
    disp_names = (DISPLACEMENT_VOLUME_NAMES if displacement else ()) + (BREATH_VOLUME_NAMES if breathing else ())
    written = {row[c] for row in rows for c in ("file", *names, *disp_names)}
    for name in stale:
        if name not in written and re.fullmatch(r"([a-z0-9_]+/)?[a-z-]+-\d{4}\.nii\.gz", name):
            (out / name).unlink(missing_ok=True)
            folder = (out / name).parent
            if folder != out and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    label_doc = (
        f"emphysema severity from emphysema_pct, class boundaries {list(thorax_ct.SEVERITY_THRESHOLDS_PCT)} %"
        if kind == "thorax-ct"
        else f"atrophy class from atrophy, class boundaries {list(brain_mri.ATROPHY_THRESHOLDS)}"
    )
    volumes = volume_specs(kind, domain, bool(lesion_kinds), longitudinal, healthy, breathing)
    volumes["tissue"]["dtype"] = "int16"
    t2_units = {"dtype": "float32", "units": "T2-like units >= 0 (CSF brightest)"}
    if "t2" in volumes:
        volumes["t2"].update(t2_units)
    t1_units = {"dtype": "float32", "units": "T1-like units >= 0"}
    for name, made in (("followup", longitudinal), ("healthy", healthy)):
        if made:
            volumes[name].update(t2_units if domain == "B" else t1_units)
            volumes[f"{name}_tissue"]["dtype"] = "int16"
            if f"{name}_t2" in volumes:
                volumes[f"{name}_t2"].update(t2_units)
    hu_a = {"dtype": "int16", "units": "Hounsfield units"}
    hu_b = {"dtype": "int16", "units": "Hounsfield units, domain B (second scanner)"}
    if DOMAIN_B_VOLUME in volumes:
        volumes[DOMAIN_B_VOLUME].update(hu_b if kind == "thorax-ct" else t2_units)
    if breathing:
        volumes["expiration"].update(hu_b if domain == "B" else hu_a)
        volumes["expiration_tissue"]["dtype"] = "int16"
    if lesion_kinds:
        most = max(int(row["lesion_count"]) for row in rows)
        volumes["lesion"]["dtype"] = "int16"
        volumes["lesion"]["classes"].update({str(k): f"lesion {k} (label {k} in the lesions column)"
                                             for k in range(1, most + 1)})
        if kind == "thorax-ct":
            volumes["normal"].update(hu_b if domain == "B" else hu_a)
        else:
            volumes["normal"].update(t2_units if domain == "B" else t1_units)
        if "normal_t2" in volumes:
            volumes["normal_t2"].update(t2_units)
    columns = ["id", "file", "kind", "label"]
    columns += [c for c in rows[0] if c not in columns and c not in volumes and c not in disp_names]
    columns += list(volumes) + list(disp_names)
    write_csv(out / "manifest.csv", rows, columns)
    if kind == "thorax-ct":
        intensity = "Hounsfield units (int16)"
    else:
        intensity = f"{'T2' if domain == 'B' else 'T1'}-like units >= 0 (float32)"
    # a domain-A set is written exactly as before domains existed; B and both sets say what they hold
    domain_info = {} if domain == "A" else {"domain": domain, "domains": domains.describe(kind)}
    # likewise a set without lesions, unless it is marked normal
    lesion_info: dict[str, Any] = {"normal": True} if normal else {}
    if lesion_kinds:
        lesion_info["lesions"] = {
            "kinds": {name: lesion_lib.DESCRIPTIONS[name] for name in lesion_kinds},
            "abnormal_fraction": fraction,
            "abnormal": f"volume index is abnormal if numpy.random.default_rng(numpy.random.SeedSequence("
                        f"volume_seed(seed, index), spawn_key={lesion_lib.ABNORMAL_STREAM})).random() < "
                        f"abnormal_fraction; it gets a random non-empty subset of the kinds",
            "visible": "a lesion with no voxel at least half covered is not painted: listed with visible false "
                       "and label 0, not counted; a volume without visible lesions has abnormal 0",
            "normal": "the image without lesions: outside the lesion map the image equals it voxel for voxel"
                      + (" (domain B: up to the second scanner's blur)" if domain == "B" else ""),
        }
    # likewise a set without the registration and progression ground truth
    truth_info: dict[str, Any] = {}
    if longitudinal:
        truth_info["longitudinal"] = _longitudinal_info(domain)
    if healthy:
        truth_info["healthy"] = _healthy_info(domain)
    if displacement:
        truth_info["displacement"] = _displacement_info(longitudinal, healthy)
    if breathing:
        truth_info["breathing"] = _breathing_info(domain)
    atomic_write_json(
        out / MARKER,
        {
            "kind": kind,
            "n": n,
            "size": size if isinstance(size, int) else list(shape),
            "shape": list(shape),
            "seed": seed,
            "nodules": bool(nodules),
            "field_of_view_mm": [round(a * b, 6) for a, b in zip(shape, voxel)],
            "spacing_mm": list(voxel),
            "intensity": intensity,
            "label": label_doc,
            # extra voxel-aligned volumes: manifest column = name, files <name>/<id>.nii.gz
            "volumes": volumes,
            "volume_seed": "medgen.data.phantoms.volume_seed(seed, index)",
            **domain_info,
            **lesion_info,
            **truth_info,
            "medgen_version": __version__,
        },
    )
    return rows


def _longitudinal_info(domain: str) -> dict[str, Any]:
    """``phantoms.json`` ``longitudinal``: how the follow-ups were made."""
    from medgen.data.phantoms import brain_mri

    contrast = "T2" if domain == "B" else "T1"
    return {
        "followup": f"volume followup ({contrast}; followup_tissue its tissue map, followup_t2 its T2 where the "
                    f"set has t2): the same subject after interval_years, with the atrophy factor grown to "
                    f"atrophy_followup = atrophy + atrophy_rate_per_year * interval_years (may exceed 1); same "
                    f"anatomy, deformation, bias field, contrast and gain, noise drawn anew",
        "interval_years": {"distribution": "uniform", "range": list(brain_mri.FOLLOWUP_YEARS)},
        "atrophy_rate_per_year": {"distribution": "uniform per subject",
                                  "range": list(brain_mri.ATROPHY_RATE_PER_YEAR)},
        "cortical_thinning_mm_per_year": f"{brain_mri.CORTEX_THINNING_MM:g} * atrophy_rate_per_year",
        "ventricle_growth_mm_per_year": f"{brain_mri.VENTRICLE_GROWTH_MM:g} * atrophy_rate_per_year (outward "
                                        f"movement of the ventricles' boundary)",
        "atrophy": "a change of tissue in template space (grey matter -> CSF from the outer brain surface, tissue -> "
                   "ventricular CSF), not a deformation: voxel (i, j, k) of followup is voxel (i, j, k) of the "
                   "image (true displacement between them: zero)",
        "columns": list(brain_mri.LONGITUDINAL_FACTORS),
        "seed": f"numpy.random.SeedSequence(volume_seed(seed, index), spawn_key={brain_mri.LONGITUDINAL_STREAM} "
                f"+ (k,)): k = 0 interval and rate, 1 T1 noise, 2 T2 noise",
    }


def _healthy_info(domain: str) -> dict[str, Any]:
    """``phantoms.json`` ``healthy``: what the healthy selves are."""
    from medgen.data.phantoms import brain_mri

    contrast = "T2" if domain == "B" else "T1"
    return {
        "healthy": f"volume healthy ({contrast}; healthy_tissue its tissue map, healthy_t2 its T2 where the set has "
                   f"t2): the same subject and scan at atrophy 0 (ventricle boundary at the subject's own offset): "
                   f"same anatomy, deformation, bias field, contrast, gain and noise realisation (the image's "
                   f"noise streams)",
        "difference": "image - healthy is the effect of the atrophy alone: exactly 0 wherever the atrophy leaves the "
                      "partial-volume tissue fractions unchanged (the noise cancels); voxel (i, j, k) of healthy is "
                      "voxel (i, j, k) of the image (true displacement between them: zero)",
        "atrophy": f"a change of tissue in template space: at atrophy a the cortex is {brain_mri.CORTEX_THINNING_MM:g} "
                   f"* a mm thinner (grey matter -> CSF) and the ventricles' boundary {brain_mri.VENTRICLE_GROWTH_MM:g}"
                   f" * a mm further out (tissue -> ventricular CSF) than in the healthy self",
        "columns": list(brain_mri.HEALTHY_FACTORS),
    }


def _displacement_info(longitudinal: bool, healthy: bool = False) -> dict[str, Any]:
    """``phantoms.json`` ``displacement``: the convention of the displacement volumes."""
    info = {
        "volumes": list(DISPLACEMENT_VOLUME_NAMES),
        "files": "<name>/<id>.nii.gz (manifest columns of the same names), on the image's grid and affine",
        "dtype": "float32",
        "units": "mm (RAS+ components x, y, z)",
        "convention": "q = A (i, j, k, 1) + (disp_x, disp_y, disp_z)[i, j, k]: the template point that voxel (i, j, k) "
                      "of the image (NIfTI affine A, RAS+ mm) was sampled from, in the MNI152 2009a symmetric "
                      "template's world coordinates (RAS+ mm, nilearn's template affine): the anatomy at the voxel "
                      "is the template's at q, up to atrophy (a change of tissue in template space, not a "
                      "deformation)",
        "between_subjects": "medgen.data.phantoms.deformation.true_displacement((u_m, A_m), (u_f, A_f)): on the fixed "
                            "subject's grid, d with moving(A_f v + d) corresponding to fixed voxel v, i.e. "
                            "q_m^-1(q_f(v)) - A_f v; read_displacement(folder, id) gives (u, A)",
        "preprocess": "not declared under volumes, so medgen preprocess does not carry them (it would normalise the "
                      "millimetres as an intensity); use these files with their affine",
    }
    if longitudinal:
        info["longitudinal"] = "the follow-up shares the image's field; the displacement between them is zero"
    if healthy:
        info["healthy"] = "the healthy self shares the image's field; the displacement between them is zero"
    return info


def _breathing_info(domain: str) -> dict[str, Any]:
    """``phantoms.json`` ``breathing``: the expiration scans and the convention of the breath_* volumes."""
    from medgen.data.phantoms import thorax_ct

    return {
        "expiration": "volume expiration (int16 HU" + (", domain B's scanner" if domain == "B" else "")
                      + "; expiration_tissue its tissue map): the same subject and scan at end-expiration; the "
                        "image is end-inspiration. Made by resampling the image's noise-free version at p + u(p) "
                        "(linear; expiration_tissue nearest; beyond the grid the nearest border voxel), then "
                        "noise of the same model drawn anew; intensities move but do not change (no density "
                        "change of the parenchyma)",
        "volumes": list(BREATH_VOLUME_NAMES),
        "files": "<name>/<id>.nii.gz (manifest columns of the same names), on the image's grid and affine",
        "dtype": "float32",
        "units": "mm (RAS+ components x, y, z)",
        "convention": "expiration(p) = image(p + u(p)), u = (breath_x, breath_y, breath_z)[p] at voxel p: the "
                      "pull-back field of medgen register with MOVING the image and FIXED expiration; in voxels "
                      "u / spacing_mm per axis",
        "model": "u(p) = c(z) g(p) (0, breathing_ap_mm a(y), -breathing_cc_mm): c a smoothstep from 0 at the lung "
                 "apices to 1 at the top of the diaphragm at expiration (then 1: the lung bases and the abdomen "
                 "rise by breathing_cc_mm); a a smoothstep from 0 at the spine to 1 at the front of the body (the "
                 "anterior chest wall moves in by breathing_ap_mm); g 0 around the spine (rigid), 1 beyond 45 mm "
                 "from it. Smooth, no folding, no sliding",
        "breathing_cc_mm": {"distribution": "uniform per subject", "range": list(thorax_ct.BREATHING_CC_MM)},
        "breathing_ap_mm": {"distribution": "uniform per subject", "range": list(thorax_ct.BREATHING_AP_MM)},
        "columns": list(thorax_ct.BREATHING_FACTORS),
        "preprocess": "breath_* not declared under volumes, so medgen preprocess does not carry them (it would "
                      "normalise the millimetres as an intensity); expiration and expiration_tissue are carried",
        "seed": f"numpy.random.SeedSequence(volume_seed(seed, index), spawn_key={thorax_ct.BREATHING_STREAM} "
                f"+ (k,)): k = 0 amplitudes, 1 noise, 2 domain B noise",
    }


def spacing_mm(kind: str, size: int) -> float:
    """Voxel size in mm of a phantom set of ``kind`` at ``size``³ (default spacing)."""
    from medgen.data.phantoms import brain_mri, thorax_ct

    return (thorax_ct if kind == "thorax-ct" else brain_mri).FOV_MM / size
