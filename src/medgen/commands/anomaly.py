"""``medgen anomaly RUN DATA --out DIR``: flag what a model of normal anatomy cannot reproduce.

Examples::

    medgen anomaly runs/fanogan32 data/ct32-lesions --out anomaly/ --split test     # f-AnoGAN on HA-GAN
    medgen anomaly runs/ae32 data/ct32-lesions --out anomaly-ae/                    # autoencoder residual
    medgen anomaly runs/ddpm32 data/ct32-lesions --out anomaly-ddpm/ --noise-level 0.3 --steps 20
    medgen anomaly runs/inpaint64 data/ct64-lesions --out anomaly-inpaint/ --box 4   # mask-and-inpaint (unet)
    medgen anomaly runs/inpaint64 data/ct64-lesions --out an-inpaint4/ --box 4 --shifts 4  # 4 grid placements
    medgen anomaly runs/fanogan32 scans/ --out my-scans/                            # your own scans (32³)
    medgen anomaly runs/ae32 data/ct32-lesions --out an-ae/ --reference data/ct32-normal  # + normative scores

The work is :mod:`medgen.inference.anomaly`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "anomaly",
        help="anomaly scores, voxel maps and normal reconstructions from a model trained on normal volumes",
        description=(
            "Reconstruct every volume of DATA as the closest normal volume the model of training run RUN can "
            "make (fanogan: G(E(x)); autoencoder, vae-gan, alpha-gan, hagan: through the encoder; ddpm: partial "
            "noising and denoising; a unet run of the inpaint task: every cube of a checkerboard hidden in turn and inpainted from its context) and write OUT/scores.csv (per-volume scores), OUT/maps/<id>.nii.gz (the "
            "voxel anomaly map |x - x_rec|, CT in HU), OUT/reconstructions/<id>.nii.gz (the counterfactual "
            "normal volume) and OUT/figures/<id>.png. DATA is a preprocessed data set or a scan / folder of "
            "scans of the model's volume size. With ground truth in the data set (the manifest column "
            "'abnormal' and/or the volume 'lesion', as `medgen phantoms --lesions` writes them), "
            "OUT/metrics.json gives volume-level AUROC/AUPRC and voxel-level AUPRC and best Dice. A rerun "
            "skips finished volumes."
        ),
        epilog="Exit codes: 0 all written, 1 some inputs failed (the others are written), 2 usage or input error.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder of a model trained on normal volumes")
    p.add_argument("input", metavar="DATA", help="preprocessed data set, scan file, DICOM folder or folder of scans")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="data set input: which subjects, by the data set's default split (default all)")
    p.add_argument("--reference", default=None, metavar="NORMAL_DATA",
                   help="a preprocessed data set of normal volumes not used in training: also write normative "
                        "maps (each voxel's residual standardised by those volumes' mean and spread there; "
                        "OUT/maps_normative/, z_score_* columns, 'normative' in metrics.json) and the "
                        "score_blob_excess column (how far the brightest compact spot of x - x_rec exceeds what "
                        "those volumes show at that place) with score_blob_excess_z, the same in standard "
                        "deviations of what normal volumes reach, which `medgen anomaly-ensemble` averages over "
                        "detectors")
    p.add_argument("--noise-level", type=float, default=None, metavar="F",
                   help="diffusion models: the fraction of the forward process the volume is noised to before "
                        "it is denoised back (0 < F <= 1; default the model's)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion models: denoising steps from that level (default the model's)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="diffusion models: seed of the noise (default the model's)")
    p.add_argument("--box", type=int, default=None, metavar="N",
                   help="mask-and-inpaint (a unet run of the inpaint task): edge in voxels of the cubes hidden in "
                        "turn, at least the size of the lesions to find (default 4)")
    p.add_argument("--shifts", type=int, default=None, metavar="N",
                   help="mask-and-inpaint: lay the checkerboard N times, moved by box/N voxels each time, and average "
                        "the reconstructions (N times the work; 1 to the box's edge, default 1)")
    p.add_argument("--figures", type=int, default=16, metavar="N",
                   help="data sets: figures for the first N volumes, abnormal ones first (default 16; -1: all)")
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="checkpoint to load (default: the run's latest)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace, model) -> dict:
    """The reconstruction options given (diffusion: noise level, steps, seed; mask-and-inpaint: box, shifts), checked
    against what the model's reconstruction takes."""
    import inspect

    from medgen.core.errors import UsageError

    given = {"noise_level": args.noise_level, "steps": args.steps, "seed": args.seed, "box": args.box,
             "shifts": args.shifts}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return {}
    method = getattr(model, "anomaly", None) or getattr(model, "reconstruct")
    accepted = inspect.signature(method).parameters
    unknown = [k for k in given if k not in accepted]
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise UsageError(f"{flags}: this model's reconstruction takes no such option (--noise-level, --steps and "
                         "--seed apply to diffusion models such as ddpm, --box and --shifts to a unet run of the "
                         "inpaint task)")
    if "noise_level" in given and not 0.0 < given["noise_level"] <= 1.0:
        raise UsageError(f"--noise-level {given['noise_level']}: need 0 < F <= 1")
    if "steps" in given and given["steps"] < 1:
        raise UsageError(f"--steps {given['steps']}: need at least 1")
    if "box" in given and given["box"] < 1:
        raise UsageError(f"--box {given['box']}: need at least 1 voxel")
    box = given.get("box", accepted["box"].default if "box" in accepted else 1)
    if "shifts" in given and not 1 <= given["shifts"] <= box:
        raise UsageError(f"--shifts {given['shifts']}: need 1 to {box} (the edge of the cubes, --box)")
    return given


def run(args: argparse.Namespace) -> int:
    from medgen.core.device import resolve_device
    from medgen.core.errors import EXIT_PARTIAL, UsageError
    from medgen.data.discover import scan_inputs
    from medgen.families import registry
    from medgen.inference.anomaly import anomaly_dataset, anomaly_scans, check_model, reference_statistics

    model = registry.load(args.run, checkpoint=args.checkpoint, device=resolve_device(args.device))
    check_model(model, f"{args.run} (a {registry.load_run_config(args.run).family!r} run)")
    options = _options(args, model)
    src, out = Path(args.input), Path(args.out)
    is_dataset = src.is_dir() and (src / "manifest.csv").is_file() and (src / "preprocess.json").is_file()
    reference = None
    if args.reference is not None:
        ref_dir = Path(args.reference)
        if not (ref_dir / "manifest.csv").is_file() or not (ref_dir / "preprocess.json").is_file():
            raise UsageError(f"--reference {ref_dir}: not a preprocessed data set (no manifest.csv/preprocess.json)")
        reference = reference_statistics(model, ref_dir, out, progress=not args.no_progress, **options)
    if is_dataset:
        figures = None if args.figures < 0 else args.figures
        summary = anomaly_dataset(model, src, out, split=args.split, figures=figures,
                                  progress=not args.no_progress, reference=reference, **options)
        m = summary.metrics or {}
        parts = [f"{label} {m[key]:.3f}" for key, label in (
            ("auroc_score", "AUROC"), ("auprc_score", "AUPRC"), ("voxel_auprc", "voxel AUPRC"),
            ("best_dice", "best Dice")) if m.get(key) is not None]
        if parts:
            print(f"{args.split} subjects against their ground truth: {', '.join(parts)} (OUT/metrics.json)")
        for note in m.get("notes", []):
            print(f"medgen anomaly: {note}")
    else:
        if reference is not None:
            raise UsageError("--reference applies to a data set input (scans get the residual maps only)")
        summary = anomaly_scans(model, scan_inputs(src, exclude=out), out, progress=not args.no_progress, **options)
        for path, reason in summary.failed:
            print(f"medgen anomaly: skipped {path}: {reason}")
    print(f"wrote {len(summary.written)} volume(s) to {out}" + (f", kept {len(summary.skipped)}" if summary.skipped else ""))
    return EXIT_PARTIAL if summary.failed else 0
