"""Writing a phantom data set to a folder: what ``medgen phantoms`` does, as a library call.

``OUT/<kind>-<i:04d>.nii.gz`` (CT as int16 Hounsfield units, MRI as float32), each
subject's extra voxel-aligned volumes in sub-folders (``OUT/tissue/<id>.nii.gz``, the
int16 tissue label map; for brain MRI also ``OUT/t2/<id>.nii.gz``, a T2-weighted
contrast, float32), ``OUT/manifest.csv`` (id, file, kind, label, the ground-truth
factors, then one column per extra volume holding its relative path) and
``OUT/phantoms.json`` (how the set was made, and under ``volumes`` the extra volumes:
kind ``label`` with its ``classes``, or ``intensity``; ``medgen preprocess`` carries
them into the data set). Volume i depends only on (kind, grid, seed, i, nodules), so
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

Example::

    rows = write_phantom_set("thorax-ct", n=8, size=64, seed=0, out="phantoms/")
    rows = write_phantom_set("brain-mri", n=8, size=(64, 64, 40), seed=0, out="brains/", spacing=(0.8, 0.8, 2.5))
    rows = write_phantom_set("thorax-ct", n=8, size=64, seed=2, out="pairs/", domain="both")
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


def volume_names(kind: str, domain: str = "A") -> tuple[str, ...]:
    """The extra volumes a ``domain`` set of ``kind`` writes (a B set's image is the brain ``t2``)."""
    names = VOLUME_NAMES[kind]
    if domain == "B":
        return tuple(name for name in names if name != B_EXTRA_VOLUME.get(kind))
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
) -> None:
    """UsageError (one line, naming the option) for a phantom set that cannot be made.

    ``size``: S or a shape (X, Y, Z), each in 16..512; ``spacing``: None, or one voxel
    size or three in mm, each in 0.1..100; ``domain``: A, B or both.
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


def _previous_files(out: Path) -> list[str]:
    """Volume files (relative paths) listed by a previous phantom set in ``out`` (empty if none)."""
    manifest = out / "manifest.csv"
    if not manifest.exists():
        return []
    names = {name for names in VOLUME_NAMES.values() for name in names} | {DOMAIN_B_VOLUME}
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
    """``array`` as written: labels and CT images (the image, ``domain_b``) int16, the rest float32."""
    import numpy as np

    hu = kind == "thorax-ct" and name in ("image", DOMAIN_B_VOLUME)
    return array.astype(np.int16) if hu or array.dtype.kind in "iub" else array.astype(np.float32)


def _make_one(
    kind: str, size: Any, seed: int, index: int, nodules: bool, out: str, spacing: Any = None, domain: str = "A"
) -> dict[str, Any]:
    """Generate volume ``index``, write it (in ``domain``) and its extra volumes, and return its
    manifest row (runs in workers)."""
    from medgen.data.io import write_nifti
    from medgen.data.phantoms import domains, generate, volume_seed

    subject_seed = volume_seed(seed, index)
    ph = generate(kind, size, subject_seed, nodules=nodules, spacing=spacing)
    vid = f"{kind}-{index:04d}"
    fname = f"{vid}.nii.gz"
    image = domains.render(ph, "B" if domain == "B" else "A", subject_seed)
    write_nifti(Path(out) / fname, _stored(kind, "image", image), ph.affine)
    row = {"id": vid, "file": fname, "kind": kind, "label": ph.factors["label"]}
    row.update({k: v for k, v in ph.factors.items() if k != "label"})
    row.update(domains.manifest_columns(kind, domain))
    for name in volume_names(kind, domain):
        extra = domains.render(ph, "B", subject_seed) if name == DOMAIN_B_VOLUME else ph.volumes[name]
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
) -> list[dict[str, Any]]:
    """Write ``n`` phantoms of ``kind`` at ``size``³ (or ``size`` = (X, Y, Z)) voxels of ``spacing``
    mm into ``out``, rendered in ``domain`` (A, B or both; see the module docstring); returns
    the manifest rows.

    ``out`` must be empty, absent or an earlier phantom set (whose volumes beyond the new
    ``n`` are removed); ``overwrite`` allows another non-empty folder. ``workers``:
    parallel processes. RunFailed if generation fails (e.g. the brain template is missing).
    """
    from tqdm import tqdm

    from medgen.data.phantoms import brain_mri, domains, thorax_ct, volume_specs

    check_request(kind, n, size, seed, nodules, workers, spacing, domain)
    size = int(size) if isinstance(size, Integral) else tuple(int(v) for v in size)
    spacing = spacing if spacing is None or isinstance(spacing, Real) else tuple(float(v) for v in spacing)
    shape, voxel = grid_of(kind, size, spacing)
    out = Path(out)
    stale = _prepare_out(out, overwrite)
    jobs = [(kind, size, seed, i, nodules, str(out), spacing, domain) for i in range(n)]
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

    written = {row[c] for row in rows for c in ("file", *volume_names(kind, domain))}
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
    volumes = volume_specs(kind, domain)
    volumes["tissue"]["dtype"] = "int16"
    t2_units = {"dtype": "float32", "units": "T2-like units >= 0 (CSF brightest)"}
    if "t2" in volumes:
        volumes["t2"].update(t2_units)
    if DOMAIN_B_VOLUME in volumes:
        hu_units = {"dtype": "int16", "units": "Hounsfield units, domain B (second scanner)"}
        volumes[DOMAIN_B_VOLUME].update(hu_units if kind == "thorax-ct" else t2_units)
    columns = ["id", "file", "kind", "label"]
    columns += [c for c in rows[0] if c not in columns and c not in volumes] + list(volumes)
    write_csv(out / "manifest.csv", rows, columns)
    if kind == "thorax-ct":
        intensity = "Hounsfield units (int16)"
    else:
        intensity = f"{'T2' if domain == 'B' else 'T1'}-like units >= 0 (float32)"
    # a domain-A set is written exactly as before domains existed; B and both sets say what they hold
    domain_info = {} if domain == "A" else {"domain": domain, "domains": domains.describe(kind)}
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
            "medgen_version": __version__,
        },
    )
    return rows


def spacing_mm(kind: str, size: int) -> float:
    """Voxel size in mm of a phantom set of ``kind`` at ``size``³ (default spacing)."""
    from medgen.data.phantoms import brain_mri, thorax_ct

    return (thorax_ct if kind == "thorax-ct" else brain_mri).FOV_MM / size
