"""``medgen evaluate``: compare generated volumes with real ones.

Examples::

    # the HA-GAN paper's protocol (needs MedicalNet weights and a GPU for 256³)
    medgen evaluate --real data/ct256 --fake samples/ct256 --features med3d \\
        --weights resnet_50_23dataset.pth --paper-protocol --bootstrap 10 --out metrics.json

    # no weights: random features, only for relative comparisons on the same data
    medgen evaluate --real data/ct64 --fake samples/ct64 --features random --out metrics.json

    # privacy check against the training set, held-out real data as reference
    medgen evaluate --real data/heldout --train data/train --fake samples/ct64 \\
        --features random --metrics fid,memorisation --out metrics.json

    # a segmentation against the data set's label maps: per-label Dice and HD95
    medgen evaluate --paired --labels --real data/brain64 --fake seg-test/ --out seg.json

    # Inception Score through a classifier of real labels (medgen train-classifier)
    medgen evaluate --real data/ct64 --fake samples/ct64 --metrics is --classifier classifiers/severity --out is.json

Writes OUT (JSON: every number with its settings, extractor and sample sizes), a figures
folder next to it, and prints a table. Real-data features are cached in
``<folder>/.medgen-cache`` keyed by a hash of files, extractor and settings. A run folder
as --fake is sampled into ``<OUT stem>-samples/<checkpoint>-seed<seed>/``. The work is
:func:`medgen.api.evaluate` (the Python API); this module only parses the arguments.

Exit codes: 0 done, 1 some metric failed on the data (the others are written),
2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="distribution, diversity, anatomy and memorisation metrics of generated volumes",
        description=(
            "Compare generated volumes (--fake) with real ones (--real): FID, KID, MMD, precision/recall/"
            "density/coverage on 3D ResNet-50 features, MS-SSIM diversity, the directions of variation, anatomy statistics, and with "
            "--train a memorisation check. Folders are preprocessed data sets (medgen preprocess) or "
            "folders of NIfTI/.npy volumes (e.g. medgen generate output); --fake may also be a training "
            "run folder, sampled with --n volumes first."
        ),
        epilog="Exit codes: 0 success, 1 a metric failed (others written), 2 usage or input error, 130 interrupted.",
    )
    p.add_argument("--real", required=True, metavar="DIR", help="real volumes: preprocessed data set or folder of volumes")
    p.add_argument("--paired", action="store_true",
                   help="image-to-image outputs (--fake) against their targets (--real), paired by id: PSNR, SSIM, "
                        "NMSE over the volume and the body, CT HU error inside body, lungs and bone, and with --masks "
                        "inside the mask only")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="--paired: label volumes (nonzero = region, e.g. inpainting's hidden region) with the same ids")
    p.add_argument("--labels", action="store_true",
                   help="--paired: --fake and --real are label maps (e.g. `medgen segment` output against a data set): "
                        "per-label Dice and 95%% Hausdorff distance in mm instead of the intensity metrics")
    p.add_argument("--label-volume", default="tissue", metavar="NAME",
                   help="--paired --labels: the label volume read from a preprocessed data set (default tissue)")
    p.add_argument("--fake", required=True, metavar="DIR_OR_RUN",
                   help="generated volumes (folder), or a training run folder to sample --n volumes from")
    p.add_argument("--train", default=None, metavar="DIR",
                   help="the model's training data, for the memorisation check (--real then serves as held-out reference)")
    p.add_argument("--out", required=True, metavar="FILE", help="metrics JSON to write (figures go to FILE's stem + '-figures/')")
    p.add_argument("--n", type=int, default=None, metavar="N",
                   help="use at most N volumes of each set (seeded random subset); number to sample from a run")
    p.add_argument("--features", choices=("med3d", "random", "encoder"), default=None,
                   help="feature extractor: med3d = MedicalNet ResNet-50 with --weights (the paper's); random = same "
                        "network with seeded random weights, NOT comparable with published values; encoder = a trained "
                        "HA-GAN's encoder (--weights RUN). Default: med3d if --weights is given")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="med3d: MedicalNet weight file (resnet_50.pth / resnet_50_23dataset.pth); encoder: run folder")
    p.add_argument("--metrics", default=None, metavar="LIST",
                   help="comma-separated: fid,kid,mmd,prdc,is,ms_ssim,dimensionality,anatomy,memorisation (default: "
                        "fid,kid,mmd,prdc,ms_ssim,dimensionality, anatomy when the modality is known, memorisation "
                        "with --train)")
    p.add_argument("--input-size", default=None, metavar="N|native",
                   help="voxels per side fed to the feature network (default: 64 for random, native for med3d)")
    p.add_argument("--intensity", choices=("zscore", "raw"), default=None,
                   help="feature input normalisation: zscore per volume (default, MedicalNet's) or raw [-1, 1]")
    p.add_argument("--axis-order", choices=("xyz", "zyx"), default=None,
                   help="axis order fed to the network: xyz (nibabel, MedicalNet's loader; default) or zyx (SimpleITK)")
    p.add_argument("--paper-protocol", action="store_true",
                   help="the HA-GAN authors' feature protocol: med3d, native size, raw [-1, 1] input, zyx axis order")
    p.add_argument("--modality", choices=("ct", "mri"), default=None,
                   help="modality of folders of raw volumes (default: from preprocess.json/generate.json, or guessed)")
    p.add_argument("--batch-size", type=int, default=2, metavar="B", help="volumes per feature-network batch (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights, subsets and resampling (default 0)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="std of FID and MMD over N bootstrap resamples (default 0: no std)")
    p.add_argument("--kid-subsets", type=int, default=100, metavar="N", help="KID subsets (default 100)")
    p.add_argument("--kid-subset-size", type=int, default=1000, metavar="M", help="KID subset size, capped at the set sizes (default 1000)")
    p.add_argument("--prdc-k", type=int, default=5, metavar="K", help="neighbours for precision/recall/density/coverage (default 5)")
    p.add_argument("--ms-ssim-pairs", type=int, default=50, metavar="N", help="random pairs for MS-SSIM diversity (default 50)")
    p.add_argument("--is-probs", default=None, metavar="FILE.npy",
                   help="class probabilities [n_fake, K] of the generated volumes from your classifier, for IS")
    p.add_argument("--classifier", default=None, metavar="DIR",
                   help="classifier folder from `medgen train-classifier`: IS of the generated volumes through it, "
                        "with the real volumes' IS and predicted classes as reference (instead of --is-probs)")
    p.add_argument("--is-splits", type=int, default=10, metavar="N",
                   help="IS: mean and std over N parts of the generated set (default 10; each part needs several volumes)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device of the feature network and the IS classifier (default auto)")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="feature cache folder (default DIR/.medgen-cache of each set)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def format_table(report: dict) -> str:
    """The printed summary (see :func:`medgen.metrics.evaluate.format_table`)."""
    from medgen.metrics.evaluate import format_table as _format_table

    return _format_table(report)


def save_feature_figure(real, fake, path) -> None:
    """The features figure (see :func:`medgen.metrics.feature_figure.save_feature_figure`)."""
    from medgen.metrics.feature_figure import save_feature_figure as _save

    _save(real, fake, path)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from medgen.api import evaluate
    from medgen.core.errors import EXIT_PARTIAL, UsageError

    out_path = Path(args.out)
    if out_path.suffix.lower() != ".json":
        raise UsageError(f"--out {args.out}: the metrics file must end in .json")
    if args.labels and not args.paired:
        raise UsageError("--labels goes with --paired")
    if args.paired:
        return _run_paired(args, out_path)
    if args.masks:
        raise UsageError("--masks goes with --paired")
    figures_dir = None if args.no_figures else out_path.with_name(out_path.stem + "-figures")
    result = evaluate(
        args.real, args.fake, args.train, metrics=args.metrics, features=args.features, weights=args.weights,
        classifier=args.classifier, n=args.n, device=args.device, seed=args.seed,
        samples_dir=out_path.with_name(out_path.stem + "-samples"), progress=not args.no_progress,
        is_probs=args.is_probs, input_size=args.input_size, intensity=args.intensity, axis_order=args.axis_order,
        paper_protocol=args.paper_protocol, modality=args.modality, batch_size=args.batch_size,
        bootstrap=args.bootstrap, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
        prdc_k=args.prdc_k, ms_ssim_pairs=args.ms_ssim_pairs, is_splits=args.is_splits,
        cache_dir=args.cache_dir, use_cache=not args.no_cache, figures_dir=figures_dir,
    )
    result.save(out_path)
    print(result.table())
    print(f"wrote {out_path}")
    failed = result.failed
    if failed:
        print(f"medgen evaluate: {len(failed)} metric(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def _run_paired(args: argparse.Namespace, out_path) -> int:
    """``--paired``: :func:`medgen.metrics.paired_regions.evaluate_pairs` (with ``--labels``:
    :func:`medgen.metrics.overlap.evaluate_label_pairs`), written as JSON plus a per-pair CSV."""
    from medgen.core.fileio import atomic_write_json
    from medgen.core.tables import markdown_table, write_csv
    from medgen.metrics.paired_regions import evaluate_pairs

    if args.labels:
        from medgen.core.errors import UsageError
        from medgen.metrics.overlap import evaluate_label_pairs

        if args.masks:
            raise UsageError("--masks goes with intensity pairs, not with --labels")
        report = evaluate_label_pairs(args.fake, args.real, label_volume=args.label_volume,
                                      progress=not args.no_progress)
    else:
        report = evaluate_pairs(args.fake, args.real, args.masks, modality=args.modality, progress=not args.no_progress)
    atomic_write_json(out_path, report)
    csv_path = out_path.with_suffix(".csv")
    write_csv(csv_path, report["rows"], list(report["rows"][0]))
    summary = [{"metric": k, "mean": v["value"], "std": v["std"], "n": v["n"]} for k, v in report["metrics"].items()]
    print(markdown_table(summary, ["metric", "mean", "std", "n"], 4))
    if report["settings"]["unmatched_outputs"]:
        print(f"medgen evaluate: {len(report['settings']['unmatched_outputs'])} output(s) without a target, left out")
    print(f"wrote {out_path} and {csv_path}")
    return 0
