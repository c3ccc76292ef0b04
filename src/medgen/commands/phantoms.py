"""``medgen phantoms``: write a built-in phantom data set (NIfTI volumes + manifest.csv).

Example::

    medgen phantoms --kind thorax-ct --n 8 --size 64 --seed 0 --out phantoms/
    medgen preprocess phantoms/ data/ --modality ct --size 64

The work is :func:`medgen.data.phantoms.phantom_set.write_phantom_set` (and the mosaic
:func:`medgen.viz.mosaic.save_phantom_set_mosaic`). Writes ``DIR/<kind>-<i:04d>.nii.gz`` (CT as int16 Hounsfield units, MRI as
float32), ``DIR/manifest.csv`` (id, file, kind, label, then the ground-truth
factors), ``DIR/phantoms.json`` (how the set was made) and ``DIR/mosaic.png``.
Volume i depends only on (kind, size, seed, i, nodules), so ``--n 4`` gives the
first four volumes of ``--n 8``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_KINDS = ("thorax-ct", "brain-mri")  # mirrors medgen.data.phantoms.phantom_set.KIND_NAMES (kept light for --help)


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


def run(args: argparse.Namespace) -> int:
    from medgen.data.phantoms.phantom_set import spacing_mm, write_phantom_set
    from medgen.viz.mosaic import save_phantom_set_mosaic

    rows = write_phantom_set(args.kind, args.n, args.size, args.seed, args.out, nodules=args.nodules,
                             workers=args.workers, overwrite=args.overwrite)
    save_phantom_set_mosaic(args.out, rows, args.kind)
    print(f"wrote {args.n} {args.kind} phantoms ({args.size}^3, {spacing_mm(args.kind, args.size):g} mm) to {args.out}")
    return 0
