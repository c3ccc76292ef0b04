"""``medgen unpair A_DATA B_DATA OUT``: one unpaired training set from two data sets, for ``--family cyclegan``.

Examples::

    medgen unpair data/t1-64 data/t2-64 data/t1t2-64               # subjects of A gain 'b': a B subject's image
    medgen unpair data/ct64-a data/ct64-b data/ct64-ab --seed 3    # another pairing of the subjects
    medgen train data/t1t2-64 --family cyclegan --out runs/t1t2

The work is :func:`medgen.data.unpaired_set.write_unpaired_set`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "unpair",
        help="combine two data sets of two domains into one unpaired training set (cyclegan)",
        description=(
            "Write OUT: the preprocessed data set A_DATA whose subjects gain the volume 'b', the image of a "
            "subject of B_DATA (a different subject, no correspondence): subject i of A (ids sorted) gets B's "
            "subject σ(i) for a permutation σ drawn from --seed, B's subjects cycling when A has more. The "
            "manifest column b_id names each one. Both data sets must hold volumes of one size. OUT is written "
            "whole or not at all."
        ),
        epilog="Exit codes: 0 written, 2 usage or input error (a missing data set, volumes of different sizes, "
               "an OUT in the way), 130 interrupted (nothing written; run again).",
    )
    p.add_argument("a_dir", metavar="A_DATA", help="domain A: a data set written by `medgen preprocess` (its 'image')")
    p.add_argument("b_dir", metavar="B_DATA", help="domain B: another data set of the same volume size (its 'image')")
    p.add_argument("out_dir", metavar="OUT", help="the unpaired data set to write (a new folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutation that pairs the subjects (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a data set already in OUT")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.data.unpaired_set import ID_COLUMN, VOLUME, write_unpaired_set

    summary = write_unpaired_set(args.a_dir, args.b_dir, args.out_dir, seed=args.seed, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    used = len(set(summary.pairs.values()))
    print(f"wrote {len(summary.pairs)} subjects to {args.out_dir}: each A 'image' with the image of a B subject as "
          f"{VOLUME!r} ({used} B subjects used, seed {args.seed}; manifest column {ID_COLUMN})")
    return 0
