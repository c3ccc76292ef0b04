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

    # Inception Score through a classifier of real labels (medgen train-classifier)
    medgen evaluate --real data/ct64 --fake samples/ct64 --metrics is --classifier classifiers/severity --out is.json

Writes OUT (JSON: every number with its settings, extractor and sample sizes), a figures
folder next to it, and prints a table. Real-data features are cached in
``<folder>/.medgen-cache`` keyed by a hash of files, extractor and settings.

Exit codes: 0 done, 1 some metric failed on the data (the others are written),
2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import argparse

DEFAULT_FEATURE_METRICS = ("fid", "kid", "mmd", "prdc")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="distribution, diversity, anatomy and memorisation metrics of generated volumes",
        description=(
            "Compare generated volumes (--fake) with real ones (--real): FID, KID, MMD, precision/recall/"
            "density/coverage on 3D ResNet-50 features, MS-SSIM diversity, anatomy statistics, and with "
            "--train a memorisation check. Folders are preprocessed data sets (medgen preprocess) or "
            "folders of NIfTI/.npy volumes (e.g. medgen generate output); --fake may also be a training "
            "run folder, sampled with --n volumes first."
        ),
        epilog="Exit codes: 0 success, 1 a metric failed (others written), 2 usage or input error, 130 interrupted.",
    )
    p.add_argument("--real", required=True, metavar="DIR", help="real volumes: preprocessed data set or folder of volumes")
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
                   help="comma-separated: fid,kid,mmd,prdc,is,ms_ssim,anatomy,memorisation (default: fid,kid,mmd,prdc,"
                        "ms_ssim, anatomy when the modality is known, memorisation with --train)")
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


def _parse_input_size(text: str | None, features: str) -> int | None:
    from medgen.errors import UsageError

    if text is None:
        return 64 if features == "random" else None
    if text == "native":
        return None
    try:
        size = int(text)
    except ValueError:
        raise UsageError(f"--input-size {text!r}: give a number of voxels per side or 'native'") from None
    if size < 8:
        raise UsageError(f"--input-size {size}: need at least 8 voxels per side")
    return size


def _metric_names(args, real, fake) -> list[str]:
    from medgen.metrics.registry import check_names

    if args.metrics:
        names = [n.strip() for n in args.metrics.split(",") if n.strip()]
        if not names:
            from medgen.errors import UsageError

            raise UsageError("--metrics: give at least one metric name")
        check_names(names)
        return list(dict.fromkeys(names))
    names = list(DEFAULT_FEATURE_METRICS) + ["ms_ssim"]
    if (fake.modality or real.modality) in ("ct", "mri"):
        names.append("anatomy")
    if args.train is not None:
        names.append("memorisation")
    if args.classifier is not None or args.is_probs is not None:
        names.append("is")
    return names


def _sample_run(args, out_path):
    """Generate --n volumes from a run folder into OUT's '-samples' folder; returns that folder."""
    from medgen.api import load
    from medgen.errors import UsageError
    from medgen.inference.generate import generate_to_folder

    if args.n is None:
        raise UsageError(f"{args.fake}: is a training run; pass --n N to sample N volumes from it")
    model = load(args.fake, device=args.device)
    folder = out_path.with_name(out_path.stem + "-samples")
    generate_to_folder(model, folder, args.n, seed=args.seed, fmt="npy", mosaic=False, progress=not args.no_progress,
                       source={"run": str(args.fake)})
    return folder


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def format_table(report: dict) -> str:
    """The printed summary: header naming the extractor (and its warning), one row per number."""
    lines = []
    ex = report.get("extractor")
    if ex is not None:
        size = ex.get("input_size")
        size_text = "x".join(map(str, size)) if isinstance(size, list) else str(size)
        lines.append(f"features: {ex['name']} ({ex.get('architecture', '')}; input {size_text}, "
                     f"intensity {ex.get('intensity')}, axes {ex.get('axis_order')})")
        if ex.get("warning"):
            lines.append(f"WARNING: {ex['warning']}")
    for role in ("real", "fake", "train"):
        d = report.get(role)
        if d:
            lines.append(f"{role}: {d['path']} ({d['kind']}, {d['n']} volumes, modality {d['modality'] or 'unknown'})")
    rows = [("metric", "value", "std", "n_real", "n_fake")]
    notes = []  # lines printed under the table: failures and explanations
    for name, r in report["metrics"].items():
        if "error" in r:
            notes.append(f"FAILED {name}: {r['error']}")
            continue
        if name == "memorisation":
            d = r.get("details") or {}
            notes.append(
                "memorisation: median distance generated→nearest training volume / held-out→nearest training "
                f"(≈ 1 healthy, ≪ 1 suggests copies); {d.get('n_likely_copy', '?')} generated volume(s) flagged as likely copies"
            )
            name = "memorisation ratio"
        value = r["value"]
        if isinstance(value, dict):
            for key, v in value.items():
                label = f"{name}.{key}" + (" (W1)" if name == "anatomy" else "")
                rows.append((label, _fmt(v), "-", str(r["n_real"]), str(r["n_fake"])))
        else:
            rows.append((name, _fmt(value), _fmt(r.get("std")), str(r["n_real"]), str(r["n_fake"])))
            if name in ("kid", "mmd") and isinstance(value, (int, float)) and value < 0:
                notes.append(f"{name}: unbiased estimate; below 0 means the two sets are indistinguishable at this sample size")
        reference = {"ms_ssim": "ms_ssim (real pairs, reference)", "is": "is (real volumes, reference)"}
        real_ref = (r.get("details") or {}).get("real") if name in reference else None
        if real_ref:
            rows.append((reference[name], _fmt(real_ref["mean"]), _fmt(real_ref["std"]), str(r["n_real"]), "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    lines += notes
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    for fig in report.get("figures", []):
        lines.append(f"figure: {fig}")
    return "\n".join(lines)


def save_feature_figure(real, fake, path) -> None:
    """Two panels: real and generated features embedded together in 2D by classical MDS of
    their Euclidean distances (their first two principal axes, as the HA-GAN paper's embedding
    plot), each group with its 95 % covariance ellipse; and histograms of each sample's
    distance to its nearest real sample."""
    import numpy as np
    from matplotlib.figure import Figure

    from medgen.experiments.embedding import draw_groups_with_ellipses, mds_embedding, n_std_for_coverage
    from medgen.fileio import atomic_path
    from medgen.metrics.mmd import pairwise_distances

    emb_real, emb_fake = mds_embedding([real, fake], method="classical")
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    draw_groups_with_ellipses(ax1, {"real": emb_real, "generated": emb_fake}, n_std_for_coverage(0.95))
    ax1.set_title("features, classical MDS (95% ellipses)")
    d_rr = pairwise_distances(real, real)
    np.fill_diagonal(d_rr, np.inf)
    d_fr = pairwise_distances(fake, real).min(axis=1)
    bins = np.histogram_bin_edges(np.concatenate([d_rr.min(axis=1), d_fr]), bins=20)
    ax2.hist(d_rr.min(axis=1), bins=bins, alpha=0.6, label="real -> nearest other real")
    ax2.hist(d_fr, bins=bins, alpha=0.6, label="generated -> nearest real")
    ax2.set_xlabel("feature distance")
    ax2.set_title("nearest-neighbour distances")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def run(args: argparse.Namespace) -> int:
    import datetime
    import sys
    from pathlib import Path

    from medgen import __version__
    from medgen.errors import EXIT_PARTIAL, UsageError
    from medgen.fileio import atomic_write_json
    from medgen.metrics.registry import METRICS, EvalContext, EvalOptions, compute
    from medgen.metrics.volumes import align_shapes, choose_subset, guess_modality, open_volume_set

    out_path = Path(args.out)
    if out_path.suffix.lower() != ".json":
        raise UsageError(f"--out {args.out}: the metrics file must end in .json")
    for name in ("batch_size", "kid_subsets", "kid_subset_size", "prdc_k", "ms_ssim_pairs", "is_splits"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: need at least 1")
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: need 0 or more")

    # Feature extractor choice and its settings.
    features = args.features or ("med3d" if args.weights is not None else None)
    if args.paper_protocol:
        if features not in (None, "med3d"):
            raise UsageError("--paper-protocol uses MedicalNet features: drop --features or use --features med3d")
        features = "med3d"
        clash = [o for o, v in (("--intensity", args.intensity), ("--axis-order", args.axis_order), ("--input-size", args.input_size)) if v is not None]
        if clash:
            raise UsageError(f"--paper-protocol fixes the feature input; drop {', '.join(clash)}")
        intensity, axis_order, input_size = "raw", "zyx", None
    else:
        intensity, axis_order = args.intensity or "zscore", args.axis_order or "xyz"
        input_size = _parse_input_size(args.input_size, features or "random")

    # Volume sets.
    fake_path = Path(args.fake)
    if (fake_path / "config.yaml").is_file():
        fake_path = _sample_run(args, out_path)
    real = open_volume_set(args.real, modality=args.modality, what="--real")
    fake = open_volume_set(fake_path, modality=args.modality, what="--fake")
    train = open_volume_set(args.train, modality=args.modality, what="--train") if args.train else None
    # Modality: known sets lend theirs to sets of raw files; what is still unknown is guessed.
    fake.inherit(real)
    real.inherit(fake)
    if train is not None:
        train.inherit(real)
    for vs in (real, fake, train):
        if vs is not None:
            guess_modality(vs)
    real = choose_subset(real, args.n, args.seed)
    fake = choose_subset(fake, args.n, args.seed)
    if train is not None:
        train = choose_subset(train, args.n, args.seed)

    names = _metric_names(args, real, fake)
    needs_features = any(METRICS[n].kind == "features" for n in names)
    if needs_features and features is None:
        raise UsageError(
            "feature metrics need a feature network: pass --weights FILE (MedicalNet ResNet-50, the paper's "
            "protocol) or choose --features random explicitly (not comparable with published values)"
        )
    if args.weights is not None and features == "random":
        raise UsageError("--weights is not used by --features random; drop one of them")
    if "memorisation" in names and train is None:
        raise UsageError("metric 'memorisation' needs --train (the model's training data)")
    if args.classifier is not None:
        from medgen.models.classifier import read_classifier_info

        if args.is_probs is not None:
            raise UsageError("give either --classifier DIR or --is-probs FILE.npy for IS, not both")
        if "is" not in names:
            raise UsageError("--classifier is used by the is metric only: add is to --metrics")
        read_classifier_info(args.classifier)  # fail early on a wrong folder, before any volume is read

    if needs_features and input_size is None and features != "encoder":
        shapes = {vs.native_shape(i) for vs in (real, fake, train) if vs is not None for i in range(len(vs))}
        if len(shapes) > 1:
            listed = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3])
            raise UsageError(f"native feature input needs volumes of one shape, found {listed}; pass --input-size N")

    volume_metrics = any(METRICS[n].kind == "volumes" for n in names) or "memorisation" in names
    if volume_metrics:
        align_shapes(real, fake, train)

    def factory():
        from medgen.metrics.features import make_extractor

        return make_extractor(features, weights=args.weights, input_size=input_size, intensity=intensity,
                              axis_order=axis_order, device=args.device, seed=args.seed)

    figures_dir = None if args.no_figures else out_path.with_name(out_path.stem + "-figures")
    options = EvalOptions(
        seed=args.seed, bootstrap=args.bootstrap, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
        prdc_k=args.prdc_k, ms_ssim_pairs=args.ms_ssim_pairs, is_probs=args.is_probs, classifier=args.classifier,
        is_splits=args.is_splits, device=args.device, batch_size=args.batch_size,
        progress=not args.no_progress, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        figures_dir=str(figures_dir) if figures_dir is not None else None,
    )
    ctx = EvalContext(real=real, fake=fake, train=train, extractor_factory=factory if features else None, options=options)
    if needs_features:
        _ = ctx.extractor  # fail early on a bad weight file, before reading any volume
    results = compute(names, ctx)

    if figures_dir is not None and needs_features and ctx.has_features("real") and ctx.has_features("fake"):
        path = figures_dir / "features.png"
        save_feature_figure(ctx.features("real"), ctx.features("fake"), path)
        ctx.figures.append(str(path))

    extractor = ctx.extractor.describe() if needs_features else None
    notes = list(ctx.notes)
    for role, vs in (("real", real), ("fake", fake), ("train", train)):
        if vs is not None:
            notes += [f"{role}: {n}" for n in vs.notes]
    report = {
        "medgen_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "warning": extractor.get("warning") if extractor else None,
        "extractor": extractor,
        "real": real.describe(),
        "fake": fake.describe(),
        "train": train.describe() if train is not None else None,
        "options": {
            "metrics": names, "n": args.n, "seed": args.seed, "bootstrap": args.bootstrap,
            "paper_protocol": args.paper_protocol, "batch_size": args.batch_size,
        },
        "feature_cache": ctx.feature_info,
        "metrics": results,
        "figures": ctx.figures,
        "notes": notes,
    }
    atomic_write_json(out_path, report)
    print(format_table(report))
    print(f"wrote {out_path}")
    failed = [n for n, r in results.items() if "error" in r]
    if failed:
        print(f"medgen evaluate: {len(failed)} metric(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_PARTIAL
    return 0
