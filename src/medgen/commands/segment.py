"""``medgen segment RUN IN --out OUT``: apply a trained segmentation model (``seg-unet``) to scans or a data set.

Examples::

    medgen segment runs/seg64 scans/ --out labels/                    # NIfTI in, int16 label maps out
    medgen segment runs/seg64 scan.nii.gz --out labels/ --window 64   # overlapping 64³ windows
    medgen segment runs/seg64 data/brain64 --out seg-test/ --split test   # a data set: + Dice, HD95

The work is :mod:`medgen.inference.segment`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="apply a segmentation model (seg-unet) to scans or to a data set",
        description=(
            "Segment IN with the model of training run RUN. IN is a scan (NIfTI, NRRD, MHA, a DICOM folder), a "
            "folder of scans (one-input models: each label map written to OUT/<id>.nii.gz as int16 on the scan's "
            "grid and affine), or a preprocessed data set holding the model's input volumes (label maps written to "
            "OUT/<id>.nii.gz; with the label volume the model learnt, OUT/metrics.csv and OUT/metrics.json give "
            "per-label Dice and 95 % Hausdorff distance in mm). Volumes larger than the training volumes are "
            "processed by overlapping windows. A rerun skips finished outputs."
        ),
        epilog="Exit codes: 0 all written, 1 some inputs failed (the others are written), 2 usage or input error.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder of a segmentation family (seg-unet)")
    p.add_argument("input", metavar="IN", help="scan file, DICOM folder, folder of scans, or data set")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="data set input: which subjects, by the data set's default split (default all)")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="edge of the overlapping cubic windows (default: the training patch, or the training "
                        "size for larger volumes; 0: whole volumes)")
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="checkpoint to load (default: the run's latest)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.core.device import resolve_device
    from medgen.core.errors import EXIT_PARTIAL, UsageError
    from medgen.data.discover import scan_inputs
    from medgen.families import registry
    from medgen.inference.generate import training_spacing
    from medgen.inference.segment import segment_dataset, segment_scans

    model = registry.load(args.run, checkpoint=args.checkpoint, device=resolve_device(args.device))
    if not hasattr(model, "segment"):
        raise UsageError(f"{args.run}: a {registry.load_run_config(args.run).family!r} run; segment needs a "
                         "segmentation family (seg-unet)")
    if args.window is not None and args.window < 0:
        raise UsageError(f"--window {args.window}: need 0 (whole volumes) or a positive edge")
    src, out = Path(args.input), Path(args.out)
    if src.is_dir() and (src / "manifest.csv").is_file() and (src / "preprocess.json").is_file():
        summary = segment_dataset(model, src, out, split=args.split, window=args.window, progress=not args.no_progress)
        if summary.metrics:
            parts = [f"{k} {summary.metrics[k]['value']:.4g}" for k in ("dice_mean", "hd95_mean") if k in summary.metrics]
            print(f"{args.split} subjects vs their {model.config.label!r}: {', '.join(parts)} (OUT/metrics.json)")
    else:
        items = scan_inputs(src, exclude=out)
        spacing, _ = training_spacing(model.run_config)
        summary = segment_scans(model, items, out, window=args.window, training_spacing=spacing,
                                progress=not args.no_progress)
        for path, reason in summary.failed:
            print(f"medgen segment: skipped {path}: {reason}")
    print(f"wrote {len(summary.written)} label map(s) to {out}" + (f", kept {len(summary.skipped)}" if summary.skipped else ""))
    return EXIT_PARTIAL if summary.failed else 0
