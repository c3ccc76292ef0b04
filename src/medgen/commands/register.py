"""``medgen register RUN MOVING FIXED --out DIR``: register a pair of volumes with a trained model or SimpleITK.

Examples::

    medgen register runs/reg32 moving.nii.gz fixed.nii.gz --out reg/              # scans of the model's grid
    medgen register runs/reg32 data/brain32:s3 data/brain32:s7 --out reg/ \\
        --labels data/brain32:s3:tissue --fixed-labels data/brain32:s7:tissue     # data set subjects, + Dice
    medgen register classical moving.nii.gz fixed.nii.gz --out reg-bspline/       # the SimpleITK baseline
    medgen register runs/atlas32 atlas data/brain32:s7 --out reg/                 # an atlas run's atlas

The work is :mod:`medgen.inference.register` (and :mod:`medgen.inference.classical_registration`).
"""

from __future__ import annotations

import argparse

CLASSICAL = "classical"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "register",
        help="register a moving volume to a fixed one with a registration model or the SimpleITK baseline",
        description=(
            "Register MOVING to FIXED with the model of training run RUN (family registration), or with SimpleITK's "
            "B-spline registration when RUN is the word 'classical' (--method demons: diffeomorphic demons). MOVING "
            "and FIXED are scans (NIfTI, NRRD, MHA, .npy, a DICOM folder) of one array shape, or subjects of a "
            "preprocessed data set written DATA:ID (DATA:ID:VOLUME for another of its volumes); MOVING may be the "
            "word 'atlas' for an atlas-to-subject run. Registration is in voxel space (warped(p) = moving(p + "
            "u(p))). Writes, on FIXED's affine: OUT/warped.nii.gz (MOVING in its own units), "
            "OUT/displacement.nii.gz (4D, u in mm along the RAS+ world axes), OUT/jacobian.nii.gz (≤ 0: folding), "
            "OUT/summary.json (folding %, Jacobian, similarity before/after, runtime in seconds; Dice with both "
            "label maps) and OUT/figure.png; with --labels, OUT/warped_labels.nii.gz (nearest neighbour)."
        ),
        epilog="Exit codes: 0 written, 2 usage or input error.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder of the registration family, or 'classical'")
    p.add_argument("moving", metavar="MOVING", help="scan, DATA:ID, or 'atlas' (atlas-to-subject runs)")
    p.add_argument("fixed", metavar="FIXED", help="scan or DATA:ID; the outputs are on its grid and affine")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--labels", default=None, metavar="MOVING_LABELS",
                   help="MOVING's label map (scan or DATA:ID:VOLUME), warped by nearest neighbour")
    p.add_argument("--fixed-labels", default=None, metavar="FIXED_LABELS",
                   help="FIXED's label map: with --labels, per-label Dice before and after in summary.json")
    p.add_argument("--method", choices=("bspline", "demons"), default="bspline",
                   help="classical: SimpleITK B-spline (default) or diffeomorphic demons")
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="checkpoint to load (default: the run's latest)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from medgen.core.errors import UsageError

    from medgen.inference.register import PairVolume, read_input, register_pair

    if args.fixed_labels is not None and args.labels is None:
        raise UsageError("--fixed-labels: Dice needs the moving labels too (--labels)")
    if args.run == CLASSICAL:
        from medgen.inference.classical_registration import ClassicalRegistration

        registrar, name = ClassicalRegistration(method=args.method), f"classical ({args.method})"
    else:
        from medgen.core.device import resolve_device
        from medgen.families import registry

        registrar = registry.load(args.run, checkpoint=args.checkpoint, device=resolve_device(args.device))
        if not callable(getattr(registrar, "register", None)):
            raise UsageError(f"{args.run}: a {registry.load_run_config(args.run).family!r} run; register needs a "
                             "registration run (or 'classical')")
        name = str(args.run)
    fixed = read_input(args.fixed)
    if args.moving == "atlas":
        atlas = getattr(registrar, "atlas", None)
        if atlas is None:
            raise UsageError(f"MOVING 'atlas': {args.run} is not an atlas-to-subject run")
        moving = PairVolume(np.asarray(atlas), fixed.affine, "atlas", info={})
    else:
        moving = read_input(args.moving)
    moving_labels = read_input(args.labels, label=True) if args.labels else None
    fixed_labels = read_input(args.fixed_labels, label=True) if args.fixed_labels else None
    result = register_pair(registrar, moving, fixed, args.out, moving_labels=moving_labels, fixed_labels=fixed_labels,
                           preprocess=registrar.preprocess, name=name)
    s = result.summary
    dice = s.get("dice", {})
    extra = (f"; Dice {dice['before'].get('dice_mean'):.3f} → {dice['after'].get('dice_mean'):.3f}"
             if dice and dice["before"].get("dice_mean") is not None and dice["after"].get("dice_mean") is not None else "")
    print(f"wrote {', '.join(result.written)} to {result.out_dir}: folding {s['folding_percent']:.3g} %, "
          f"{s['runtime_s']:.2f} s{extra}")
    return 0
