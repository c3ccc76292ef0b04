"""``medgen phantoms``: write a built-in phantom data set (NIfTI volumes + manifest.csv).

Example::

    medgen phantoms --kind thorax-ct --n 8 --size 64 --seed 0 --out phantoms/
    medgen preprocess phantoms/ data/ --modality ct --size 64

Writes ``DIR/<kind>-<i:04d>.nii.gz`` (CT as int16 Hounsfield units, MRI as
float32), ``DIR/manifest.csv`` (id, file, kind, label, then the ground-truth
factors), ``DIR/phantoms.json`` (how the set was made) and ``DIR/mosaic.png``.
Volume i depends only on (kind, size, seed, i, nodules), so ``--n 4`` gives the
first four volumes of ``--n 8``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from pathlib import Path

from medgen.errors import RunFailed, UsageError

_KINDS = ("thorax-ct", "brain-mri")  # mirrors medgen.data.phantoms.KINDS (kept light for --help)
_MARKER = "phantoms.json"
_MOSAIC_VOLUMES = 4


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantoms",
        help="write a built-in phantom data set (thorax CT or brain MRI) with known ground truth",
        description=(
            "Write synthetic volumes with known anatomy as NIfTI files plus manifest.csv "
            "(ground-truth factors and a 0-3 label), ready for `medgen preprocess`."
        ),
    )
    p.add_argument("--kind", required=True, help=f"phantom kind: {' or '.join(_KINDS)}")
    p.add_argument("--n", type=int, default=8, help="number of volumes (default 8)")
    p.add_argument("--size", type=int, default=64, help="voxels per side, a power of two in 16..512 (default 64)")
    p.add_argument("--seed", type=int, default=0, help="data-set seed; volume i is the same for any --n (default 0)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty or a phantom set)")
    p.add_argument("--nodules", action="store_true", help="thorax-ct only: insert 0-3 lung nodules and record them")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder that is not a phantom set")
    p.set_defaults(func=run)


def _validate(args: argparse.Namespace) -> None:
    if args.kind not in _KINDS:
        raise UsageError(f"--kind: unknown phantom kind {args.kind!r}; choose {' or '.join(_KINDS)}")
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if not (16 <= args.size <= 512 and args.size & (args.size - 1) == 0):
        raise UsageError(f"--size must be a power of two between 16 and 512, got {args.size}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.nodules and args.kind != "thorax-ct":
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
        if (out / _MARKER).exists():
            return _previous_files(out)
        if not overwrite:
            raise UsageError(
                f"{out}: folder is not empty and is not a phantom set; choose another --out or pass --overwrite"
            )
    out.mkdir(parents=True, exist_ok=True)
    return []


def _make_one(kind: str, size: int, seed: int, index: int, nodules: bool, out: str) -> dict:
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


def _manifest_text(rows: list[dict]) -> str:
    fields = list(rows[0].keys())
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    _validate(args)
    from tqdm import tqdm

    from medgen import __version__
    from medgen.fileio import atomic_write_json, atomic_write_text

    out: Path = args.out
    stale = _prepare_out(out, args.overwrite)
    jobs = [(args.kind, args.size, args.seed, i, args.nodules, str(out)) for i in range(args.n)]
    bar = tqdm(total=args.n, desc=f"phantoms {args.kind} {args.size}^3", unit="vol", file=sys.stderr)
    try:
        if args.workers == 1:
            rows = []
            for job in jobs:
                rows.append(_make_one(*job))
                bar.update()
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(args.workers, args.n)) as pool:
                rows = []
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

    from medgen.data.phantoms import brain_mri, thorax_ct

    module = thorax_ct if args.kind == "thorax-ct" else brain_mri
    label_doc = (
        f"emphysema severity from emphysema_pct, class boundaries {list(thorax_ct.SEVERITY_THRESHOLDS_PCT)} %"
        if args.kind == "thorax-ct"
        else f"atrophy class from atrophy, class boundaries {list(brain_mri.ATROPHY_THRESHOLDS)}"
    )
    atomic_write_text(out / "manifest.csv", _manifest_text(rows))
    atomic_write_json(
        out / _MARKER,
        {
            "kind": args.kind,
            "n": args.n,
            "size": args.size,
            "seed": args.seed,
            "nodules": bool(args.nodules),
            "field_of_view_mm": module.FOV_MM,
            "spacing_mm": module.FOV_MM / args.size,
            "intensity": "Hounsfield units (int16)" if args.kind == "thorax-ct" else "T1-like units >= 0 (float32)",
            "label": label_doc,
            "volume_seed": "medgen.data.phantoms.volume_seed(seed, index)",
            "medgen_version": __version__,
        },
    )
    _write_mosaic(out, rows[:_MOSAIC_VOLUMES], args.kind)
    spacing = module.FOV_MM / args.size
    print(f"wrote {args.n} {args.kind} phantoms ({args.size}^3, {spacing:g} mm) to {out}")
    return 0


def _write_mosaic(out: Path, rows: list[dict], kind: str) -> None:
    import nibabel as nib
    import numpy as np

    from medgen.viz.mosaic import save_mosaic

    volumes = [np.asarray(nib.load(str(out / row["file"])).dataobj, dtype=np.float32) for row in rows]
    titles = [f"{row['id']} (label {row['label']})" for row in rows]
    if kind == "thorax-ct":  # lung window; the sagittal plane cuts the left lung rather than the midline
        sagittal = int(0.36 * volumes[0].shape[0])
        save_mosaic(
            volumes, out / "mosaic.png", titles=titles, vmin=-1000.0, vmax=250.0, slice_index=[None, None, sagittal]
        )
    else:
        save_mosaic(volumes, out / "mosaic.png", titles=titles, vmin=0.0)
