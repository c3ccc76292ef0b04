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

Example::

    rows = write_phantom_set("thorax-ct", n=8, size=64, seed=0, out="phantoms/")
    rows = write_phantom_set("brain-mri", n=8, size=(64, 64, 40), seed=0, out="brains/", spacing=(0.8, 0.8, 2.5))
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
) -> None:
    """UsageError (one line, naming the option) for a phantom set that cannot be made.

    ``size``: S or a shape (X, Y, Z), each in 16..512; ``spacing``: None, or one voxel
    size or three in mm, each in 0.1..100.
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


def _previous_files(out: Path) -> list[str]:
    """Volume files (relative paths) listed by a previous phantom set in ``out`` (empty if none)."""
    manifest = out / "manifest.csv"
    if not manifest.exists():
        return []
    names = {name for names in VOLUME_NAMES.values() for name in names}
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


def _make_one(
    kind: str, size: Any, seed: int, index: int, nodules: bool, out: str, spacing: Any = None
) -> dict[str, Any]:
    """Generate volume ``index``, write it and its extra volumes, and return its manifest row (runs in workers)."""
    import numpy as np

    from medgen.data.io import write_nifti
    from medgen.data.phantoms import generate, volume_seed

    ph = generate(kind, size, volume_seed(seed, index), nodules=nodules, spacing=spacing)
    vid = f"{kind}-{index:04d}"
    fname = f"{vid}.nii.gz"
    data = ph.array.astype(np.int16) if kind == "thorax-ct" else ph.array.astype(np.float32)
    write_nifti(Path(out) / fname, data, ph.affine)
    row = {"id": vid, "file": fname, "kind": kind, "label": ph.factors["label"]}
    row.update({k: v for k, v in ph.factors.items() if k != "label"})
    for name in VOLUME_NAMES[kind]:
        extra = ph.volumes[name]
        stored = extra.astype(np.int16) if extra.dtype.kind in "iub" else extra.astype(np.float32)
        relative = f"{name}/{fname}"
        write_nifti(Path(out) / relative, stored, ph.affine)
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
) -> list[dict[str, Any]]:
    """Write ``n`` phantoms of ``kind`` at ``size``³ (or ``size`` = (X, Y, Z)) voxels of ``spacing``
    mm into ``out``; returns the manifest rows.

    ``out`` must be empty, absent or an earlier phantom set (whose volumes beyond the new
    ``n`` are removed); ``overwrite`` allows another non-empty folder. ``workers``:
    parallel processes. RunFailed if generation fails (e.g. the brain template is missing).
    """
    from tqdm import tqdm

    from medgen.data.phantoms import brain_mri, thorax_ct, volume_specs

    check_request(kind, n, size, seed, nodules, workers, spacing)
    size = int(size) if isinstance(size, Integral) else tuple(int(v) for v in size)
    spacing = spacing if spacing is None or isinstance(spacing, Real) else tuple(float(v) for v in spacing)
    shape, voxel = grid_of(kind, size, spacing)
    out = Path(out)
    stale = _prepare_out(out, overwrite)
    jobs = [(kind, size, seed, i, nodules, str(out), spacing) for i in range(n)]
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

    written = {row[c] for row in rows for c in ("file", *VOLUME_NAMES[kind])}
    for name in stale:
        if name not in written and re.fullmatch(r"([a-z0-9]+/)?[a-z-]+-\d{4}\.nii\.gz", name):
            (out / name).unlink(missing_ok=True)
            folder = (out / name).parent
            if folder != out and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    label_doc = (
        f"emphysema severity from emphysema_pct, class boundaries {list(thorax_ct.SEVERITY_THRESHOLDS_PCT)} %"
        if kind == "thorax-ct"
        else f"atrophy class from atrophy, class boundaries {list(brain_mri.ATROPHY_THRESHOLDS)}"
    )
    volumes = volume_specs(kind)
    volumes["tissue"]["dtype"] = "int16"
    if "t2" in volumes:
        volumes["t2"].update({"dtype": "float32", "units": "T2-like units >= 0 (CSF brightest)"})
    columns = ["id", "file", "kind", "label"]
    columns += [c for c in rows[0] if c not in columns and c not in volumes] + list(volumes)
    write_csv(out / "manifest.csv", rows, columns)
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
            "intensity": "Hounsfield units (int16)" if kind == "thorax-ct" else "T1-like units >= 0 (float32)",
            "label": label_doc,
            # extra voxel-aligned volumes: manifest column = name, files <name>/<id>.nii.gz
            "volumes": volumes,
            "volume_seed": "medgen.data.phantoms.volume_seed(seed, index)",
            "medgen_version": __version__,
        },
    )
    return rows


def spacing_mm(kind: str, size: int) -> float:
    """Voxel size in mm of a phantom set of ``kind`` at ``size``³ (default spacing)."""
    from medgen.data.phantoms import brain_mri, thorax_ct

    return (thorax_ct if kind == "thorax-ct" else brain_mri).FOV_MM / size
