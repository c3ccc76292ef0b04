"""``medgen explain CLASSIFIER VOLUME --out DIR``: a counterfactual explanation of a classifier's decision.

Examples::

    medgen explain runs/atrophy-clf data/brain32:s3 --out explain/s3                 # adversarial deformation
    medgen explain runs/atrophy-clf data/brain32:s3 --out explain/s3-robust --samples 8 --noise 0.3 --shift 2
    medgen explain runs/atrophy-clf scan.nii.gz --out explain/scan --target 0
    medgen explain runs/atrophy-clf data/brain32:s3 --out explain/s3-latent --method latent \\
        --generator runs/brain-vae --direction-data data/brain32                      # latent editing
    medgen explain runs/atrophy-clf data/brain32:s3 --out explain/s3-saliency --method saliency

The work is :mod:`medgen.inference.explain`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="counterfactual explanation of a classifier: an adversarial deformation, a latent edit, or saliency",
        description=(
            "Explain why the classifier of training run CLASSIFIER (family classifier) puts VOLUME in its class by "
            "a counterfactual of the --target class (default 0, e.g. 'normal'). --method deformation (default): "
            "the smallest smooth diffeomorphic deformation that makes the classifier say the target class "
            "(adversarial deformation field); its log Jacobian determinant shows where tissue would shrink (> 0) or "
            "grow (< 0). --method latent: the volume's code in the encoder of --generator RUN (autoencoder, "
            "HA-GAN, VAE-GAN, α-GAN) moved along the class direction (the target class's mean code minus the other "
            "classes', from the labelled data set --direction-data) until the classifier says the target class; "
            "the map is the decoder's change. --method saliency: the gradient of log p(target) (no "
            "counterfactual). VOLUME is a scan (NIfTI, NRRD, MHA, .npy, DICOM folder) of the classifier's kind, "
            "normalised as its training data were, or a preprocessed data set subject DATA:ID. Writes, on "
            "VOLUME's affine: OUT/counterfactual.nii.gz, OUT/difference.nii.gz (counterfactual − input; CT in "
            "HU), OUT/map.nii.gz, for deformation OUT/displacement.nii.gz (4D, mm) and OUT/jacobian.nii.gz, "
            "OUT/summary.json (class probabilities before and after) and OUT/figure.png."
        ),
        epilog="Exit codes: 0 written, 2 usage or input error.",
    )
    p.add_argument("run", metavar="CLASSIFIER", help="training run folder of the classifier family")
    p.add_argument("volume", metavar="VOLUME", help="scan or DATA:ID")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--method", choices=("deformation", "latent", "saliency"), default="deformation",
                   help="default deformation")
    p.add_argument("--target", type=int, default=0, metavar="K", help="the counterfactual's class (default 0)")
    g = p.add_argument_group("deformation")
    g.add_argument("--steps", type=int, default=200, help="most optimisation steps (default 200)")
    g.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    g.add_argument("--smoothness", type=float, default=1.0, help="bending-energy weight (default 1)")
    g.add_argument("--magnitude", type=float, default=0.01,
                   help="weight of the mean squared displacement in voxels² (default 0.01)")
    g.add_argument("--grid-spacing", type=int, default=4, help="voxels between velocity control points (default 4)")
    g.add_argument("--confidence", type=float, default=0.9,
                   help="stop once the target class has this probability (default 0.9)")
    g.add_argument("--samples", type=int, default=1, metavar="K",
                   help="robust counterfactual: average the classifier's loss over K noisy, shifted copies "
                        "(default 1: the plain optimisation; e.g. 8 with --noise 0.3 --shift 2)")
    g.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="Gaussian noise (normalised units) added to each copy (default 0)")
    g.add_argument("--shift", type=int, default=0, metavar="VOXELS",
                   help="random shift of each copy, up to this many voxels per axis (default 0)")
    g = p.add_argument_group("latent")
    g.add_argument("--generator", default=None, metavar="RUN", help="run of a model with an encoder")
    g.add_argument("--direction-data", default=None, metavar="DATA",
                   help="preprocessed data set whose labelled volumes give the class direction")
    g.add_argument("--label-column", default="label", help="its manifest column of classes (default label)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from medgen.core.device import resolve_device
    from medgen.core.errors import UsageError
    from medgen.core.volume import ct_window, is_ct, to_hounsfield
    from medgen.families import registry
    from medgen.inference import explain
    from medgen.inference.register import model_units, read_input

    if args.method == "latent" and (args.generator is None or args.direction_data is None):
        raise UsageError("--method latent needs --generator RUN (a model with an encoder) and --direction-data DATA")
    if args.method != "latent" and (args.generator is not None or args.direction_data is not None):
        raise UsageError("--generator and --direction-data belong to --method latent")
    device = resolve_device(args.device)
    clf = registry.load(args.run, device=device)
    network = getattr(clf, "network", None)
    if network is None or not callable(getattr(clf, "predict_proba", None)):
        raise UsageError(f"{args.run}: a {registry.load_run_config(args.run).family!r} run; explain needs a "
                         "classifier run")
    logits = explain.classifier_logits(network, clf.config.size)
    vol = read_input(args.volume)
    x = model_units(vol, clf.preprocess)
    to_units = (lambda v: to_hounsfield(v, ct_window(clf.preprocess))) if is_ct(clf.preprocess) else None
    extra = {}
    if args.method == "deformation":
        exp = explain.deformation_counterfactual(
            logits, x, args.target, steps=args.steps, lr=args.lr, smoothness=args.smoothness,
            magnitude=args.magnitude, grid_spacing=args.grid_spacing, confidence=args.confidence,
            samples=args.samples, noise=args.noise, shift=args.shift, device=device)
    elif args.method == "saliency":
        exp = explain.saliency_map(logits, x, args.target, device=device)
    else:
        gen = registry.load(args.generator, device=device)
        encode, decode = explain.encoder_decoder(gen, what=str(args.generator))
        if int(gen.config.size) != x.shape[0] or len(set(x.shape)) != 1:
            raise UsageError(f"{args.generator} works on {gen.config.size}³ volumes; VOLUME is {x.shape}")
        codes, labels = explain.dataset_codes(encode, args.direction_data, args.label_column)
        direction = explain.class_direction(codes, labels, args.target)
        exp = explain.latent_counterfactual(logits, encode, decode, x, direction, args.target, device=device)
        extra = {"generator": str(args.generator), "direction_data": str(args.direction_data),
                 "direction_volumes": int(len(labels))}
    result = explain.write_explanation(exp, x, args.out, vol.affine, to_units=to_units, source=vol.source,
                                       classifier=str(args.run), extra=extra)
    s = result.summary
    before = np.asarray(s["probs_before"])
    line = f"{args.method}: class {s['class_before']} (p {before.max():.2f})"
    if s["class_before"] == args.target:
        line += f", already the target class {args.target}"
    if "probs_after" in s:
        line += (f" → p(class {args.target}) {s['probs_after'][args.target]:.2f}"
                 f" ({'reached' if s['reached_target'] else 'not reached'})")
    if "folding_percent" in s:
        line += f", folding {s['folding_percent']:.3g} %"
    print(f"{line}; wrote {', '.join(result.written)} to {result.out_dir}")
    return 0
