"""``medgen translate RUN IN --out OUT``: apply a trained image-to-image model to scans or a paired data set.

Examples::

    medgen translate runs/denoise64 scans/low-dose/ --out denoised/          # NIfTI in, NIfTI out (HU kept)
    medgen translate runs/denoise64 scan.nii.gz --out denoised/ --window 64  # overlapping 64³ windows
    medgen translate runs/sr32 data/ct32-gap4 --out sr-test/ --split test    # a paired data set: + metrics
    medgen translate runs/cond-sr32 data/ct32-gap4 --out sr-test/ --steps 20  # cond-ddpm: 20 DDIM steps
    medgen translate runs/t1t2 t2-scans/ --out t1/ --direction BtoA          # cyclegan: the other generator
    medgen translate runs/a2b data/a64 --out a-as-b/ --as-volume b_style      # + the outputs as a volume of data/a64

The work is :mod:`medgen.inference.translate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "translate",
        help="apply an image-to-image model (unet, pix2pix, cond-ddpm, cyclegan) to scans or to a paired data set",
        description=(
            "Translate IN with the model of training run RUN. IN is a scan (NIfTI, NRRD, MHA, a DICOM folder), a "
            "folder of scans (one-input models: each written to OUT/<id>.nii.gz on its own grid and affine, CT in "
            "HU), or a preprocessed paired data set holding the model's input volumes (written to OUT/<id>.nii.gz; "
            "with the target volume, OUT/metrics.csv and OUT/metrics.json give PSNR, SSIM and NMSE). Volumes larger "
            "than the training volumes are processed by overlapping windows. A rerun skips finished outputs."
        ),
        epilog="Exit codes: 0 all written, 1 some inputs failed (the others are written), 2 usage or input error.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder of an image-to-image family (unet, pix2pix, cond-ddpm, cyclegan)")
    p.add_argument("input", metavar="IN", help="scan file, DICOM folder, folder of scans, or paired data set")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="data set input: which subjects, by the data set's default split (default all)")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="edge of the overlapping cubic windows (default: the training patch, or the training "
                        "size for larger volumes; 0: whole volumes)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion models (cond-ddpm): DDIM denoising steps per volume (default 50); fewer is faster")
    p.add_argument("--direction", choices=("AtoB", "BtoA"), default="AtoB",
                   help="two-way models (cyclegan): AtoB (default) translates domain A into B, BtoA back with the "
                        "other generator (a data set input then needs the B volume, 'b' in a `medgen unpair` set)")
    p.add_argument("--as-volume", default=None, metavar="NAME",
                   help="IN a data set: also add each output to it as the volume NAME (in its normalised units), e.g. "
                        "the images of a site translated into another's style, to train a segmenter on them with "
                        "the data set's labels (--family seg-unet --inputs NAME)")
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="checkpoint to load (default: the run's latest)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import inspect

    from medgen.core.device import resolve_device
    from medgen.core.errors import EXIT_PARTIAL, UsageError
    from medgen.data.discover import scan_inputs
    from medgen.families import registry
    from medgen.inference.generate import training_spacing
    from medgen.inference.translate import oriented, translate_dataset, translate_scans

    model = registry.load(args.run, checkpoint=args.checkpoint, device=resolve_device(args.device))
    if not hasattr(model, "translate"):
        raise UsageError(f"{args.run}: a {registry.load_run_config(args.run).family!r} run; translate needs an "
                         "image-to-image family (unet, pix2pix, cond-ddpm, cyclegan)")
    model = oriented(model, args.direction)
    if args.steps is not None and "steps" not in inspect.signature(model.translate).parameters:
        raise UsageError(f"--steps: a {registry.load_run_config(args.run).family!r} model translates in one pass "
                         "(it applies to diffusion models such as cond-ddpm)")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps {args.steps}: need at least 1")
    src, out = Path(args.input), Path(args.out)
    if args.window is not None and args.window < 0:
        raise UsageError(f"--window {args.window}: need 0 (whole volumes) or a positive edge")
    is_dataset = src.is_dir() and (src / "manifest.csv").is_file() and (src / "preprocess.json").is_file()
    if args.as_volume is not None and not is_dataset:
        raise UsageError(f"--as-volume {args.as_volume}: {src} is not a data set (the outputs of scans are NIfTI files)")
    if is_dataset:
        summary = translate_dataset(model, src, out, split=args.split, window=args.window, progress=not args.no_progress,
                                    steps=args.steps, as_volume=args.as_volume)
        if summary.metrics:
            parts = [f"{k} {v.get('value'):.4g}" for k, v in summary.metrics.items() if v.get("value") is not None]
            print(f"{args.split} subjects vs their {model.config.target!r}: {', '.join(parts)} (OUT/metrics.json)")
    else:
        items = scan_inputs(src, exclude=out)
        spacing, _ = training_spacing(model.run_config)
        summary = translate_scans(model, items, out, window=args.window, training_spacing=spacing,
                                  progress=not args.no_progress, steps=args.steps)
        for path, reason in summary.failed:
            print(f"medgen translate: skipped {path}: {reason}")
    print(f"wrote {len(summary.written)} volume(s) to {out}" + (f", kept {len(summary.skipped)}" if summary.skipped else "")
          + (f"; added them to {src} as the volume {args.as_volume!r}" if args.as_volume else ""))
    return EXIT_PARTIAL if summary.failed else 0
