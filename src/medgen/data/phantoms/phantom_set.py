"""Writing a phantom data set to a folder: what ``medgen phantoms`` does, as a library call.

``OUT/<kind>-<i:04d>.nii.gz`` (CT as int16 Hounsfield units, MRI as float32),
``OUT/manifest.csv`` (id, file, kind, label, then the ground-truth factors) and
``OUT/phantoms.json`` (how the set was made). Volume i depends only on
(kind, size, seed, i, nodules), so ``n=4`` gives the first four volumes of ``n=8``.
The mosaic ``OUT/mosaic.png`` is drawn by :func:`medgen.viz.mosaic.save_phantom_set_mosaic`
(figures are a higher layer than data).

Example::

    rows = write_phantom_set("thorax-ct", n=8, size=64, seed=0, out="phantoms/")
"""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path
from typing import Any

from medgen.core.errors import RunFailed, UsageError
from medgen.core.fileio import atomic_write_json
from medgen.core.tables import write_csv
from medgen.core.version import __version__

KIND_NAMES = ("thorax-ct", "brain-mri")
MARKER = "phantoms.json"


def check_request(kind: str, n: int, size: int, seed: int, nodules: bool = False, workers: int = 1) -> None:
    """UsageError (one line, naming the option) for a phantom set that cannot be made."""
    if kind not in KIND_NAMES:
        raise UsageError(f"--kind: unknown phantom kind {kind!r}; choose {' or '.join(KIND_NAMES)}")
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if not (16 <= size <= 512 and size & (size - 1) == 0):
        raise UsageError(f"--size must be a power of two between 16 and 512, got {size}")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if nodules and kind != "thorax-ct":
        raise UsageError("--nodules is only available for --kind thorax-ct")


def _previous_files(out: Path) -> list[str]:
    """Volume files listed by a previous phantom set in ``out`` (empty if none)."""
    manifest = out / "manifest.csv"
    if not manifest.exists():
        return []
    with manifest.open(newline="") as f:
        return [row["file"] for row in csv.DictReader(f) if "file" in row]


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


def _make_one(kind: str, size: int, seed: int, index: int, nodules: bool, out: str) -> dict[str, Any]:
    """Generate volume ``index``, write it, and return its manifest row (runs in workers)."""
    import numpy as np

    from medgen.data.io import write_nifti
    from medgen.data.phantoms import generate, volume_seed

    ph = generate(kind, size, volume_seed(seed, index), nodules=nodules)
    vid = f"{kind}-{index:04d}"
    fname = f"{vid}.nii.gz"
    data = ph.array.astype(np.int16) if kind == "thorax-ct" else ph.array.astype(np.float32)
    write_nifti(Path(out) / fname, data, ph.affine)
    row = {"id": vid, "file": fname, "kind": kind, "label": ph.factors["label"]}
    row.update({k: v for k, v in ph.factors.items() if k != "label"})
    return row


def write_phantom_set(
    kind: str,
    n: int,
    size: int,
    seed: int,
    out: str | os.PathLike,
    *,
    nodules: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Write ``n`` phantoms of ``kind`` at ``size``³ into ``out``; returns the manifest rows.

    ``out`` must be empty, absent or an earlier phantom set (whose volumes beyond the new
    ``n`` are removed); ``overwrite`` allows another non-empty folder. ``workers``:
    parallel processes. RunFailed if generation fails (e.g. the brain template is missing).
    """
    from tqdm import tqdm

    from medgen.data.phantoms import brain_mri, thorax_ct

    check_request(kind, n, size, seed, nodules, workers)
    out = Path(out)
    stale = _prepare_out(out, overwrite)
    jobs = [(kind, size, seed, i, nodules, str(out)) for i in range(n)]
    bar = tqdm(total=n, desc=f"phantoms {kind} {size}^3", unit="vol", file=sys.stderr, disable=not progress)
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

    written = {row["file"] for row in rows}
    for name in stale:
        if name not in written and re.fullmatch(r"[a-z-]+-\d{4}\.nii\.gz", name):
            (out / name).unlink(missing_ok=True)

    module = thorax_ct if kind == "thorax-ct" else brain_mri
    label_doc = (
        f"emphysema severity from emphysema_pct, class boundaries {list(thorax_ct.SEVERITY_THRESHOLDS_PCT)} %"
        if kind == "thorax-ct"
        else f"atrophy class from atrophy, class boundaries {list(brain_mri.ATROPHY_THRESHOLDS)}"
    )
    write_csv(out / "manifest.csv", rows)
    atomic_write_json(
        out / MARKER,
        {
            "kind": kind,
            "n": n,
            "size": size,
            "seed": seed,
            "nodules": bool(nodules),
            "field_of_view_mm": module.FOV_MM,
            "spacing_mm": module.FOV_MM / size,
            "intensity": "Hounsfield units (int16)" if kind == "thorax-ct" else "T1-like units >= 0 (float32)",
            "label": label_doc,
            "volume_seed": "medgen.data.phantoms.volume_seed(seed, index)",
            "medgen_version": __version__,
        },
    )
    return rows


def spacing_mm(kind: str, size: int) -> float:
    """Voxel size in mm of a phantom set of ``kind`` at ``size``³."""
    from medgen.data.phantoms import brain_mri, thorax_ct

    return (thorax_ct if kind == "thorax-ct" else brain_mri).FOV_MM / size
