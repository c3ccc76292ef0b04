"""``medgen generate``: sample full-resolution volumes from a trained model (HA-GAN, DDPM, ...).

Examples::

    medgen generate runs/t64 --n 16 --out samples/t64
    medgen generate runs/ct256 --n 100 --out samples/ct256 --chunk 16 --seed 1
    medgen generate runs/cond --n 8 --label 2 --out samples/class2
    medgen generate runs/t64 --n 16 --out samples/untrained --untrained   # baseline
    medgen generate runs/ddpm32 --n 8 --out samples/ddpm --steps 50         # DDIM, 50 steps
    medgen generate runs/ddpm-cond --n 8 --label 3 --guidance 2 --out samples/c3

Writes OUT/sample-0000.nii.gz ... (CT in Hounsfield units as int16, MRI in
[-1, 1] as float32; voxel spacing = the training data's), OUT/sample-0000.png
(three-plane mosaic), OUT/samples.csv (id, file, seed, label, z_norm) and
OUT/generate.json. Volume i depends only on (seed, i): ``--n 4`` gives the
first 4 volumes of ``--n 8``. Rerunning skips volumes already written.

Exit codes: 0 done, 2 usage/input error (e.g. RUN is not a run folder),
130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="sample synthetic volumes from a trained run (HA-GAN, DDPM, ...)",
        description=(
            "Generate full-resolution volumes with a trained model. HA-GAN: G^A on z, then G^H on the whole "
            "feature map (or in depth chunks with --chunk, which bounds memory and gives the same volumes); "
            "diffusion families: the reverse process from noise (--sampler, --steps, --guidance). "
            "Writes NIfTI volumes (CT in HU, int16; spacing of the training data), PNG mosaics and samples.csv."
        ),
        epilog="Exit codes: 0 success, 2 usage or input error, 130 interrupted (rerun to resume).",
    )
    p.add_argument("run", metavar="RUN", help="training run folder (written by `medgen train`)")
    p.add_argument("--n", type=int, required=True, help="number of volumes to generate")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed; volume i depends only on (seed, i) (default 0)")
    p.add_argument("--label", type=int, default=None, metavar="C",
                   help="class of every volume, for a class-conditional model (default: volume i gets class i mod K)")
    p.add_argument("--chunk", type=int, default=None, metavar="D",
                   help="run G^H on depth chunks of D feature-map slices (= 4·D output slices at the paper's "
                        "factor 4): peak memory scales with D, output equal to unchunked (e.g. 16 at 256³); "
                        "default: the whole feature map at once. ldm: decode D latent slices at a time (4·D output "
                        "slices), equal to whole-volume decoding")
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="volumes per forward pass (default 1)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available (default)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="checkpoint folder RUN/checkpoints/iter-NNNNNN (default: the latest)")
    p.add_argument("--no-ema", action="store_true", help="sample with the trained generator instead of its EMA copy")
    p.add_argument("--untrained", action="store_true",
                   help="sample the run's architecture at its random initialisation (drawn from --seed) instead of "
                        "its weights: the baseline a trained model must clearly beat")
    p.add_argument("--format", choices=("nifti", "npy"), default="nifti",
                   help="nifti: .nii.gz in physical units (default); npy: raw float32 output in [-1, 1]")
    p.add_argument("--no-mosaic", action="store_true", help="do not write a PNG mosaic per volume")
    d = p.add_argument_group("diffusion families (ddpm)")
    d.add_argument("--sampler", choices=("ddim", "ddpm"), default=None,
                   help="ddim (default; --steps strided steps) or ddpm (all training timesteps)")
    d.add_argument("--steps", type=int, default=None, metavar="N", help="DDIM steps (default 50)")
    d.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance weight for a conditional model: 0 unconditional, 1 conditional "
                        "(default), > 1 a stronger class")
    d.add_argument("--eta", type=float, default=None, help="DDIM noise: 0 deterministic (default) to 1 (DDPM-like)")
    g = p.add_argument_group("style-based generators (stylegan2)")
    g.add_argument("--truncation-psi", type=float, default=None, metavar="PSI",
                   help="truncation trick: w moved towards the mean w of training, w_avg + ψ(w − w_avg) (1: none, "
                        "the default; smaller: more typical, less diverse volumes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medgen.api import load
    from medgen.core.errors import UsageError
    from medgen.inference.generate import generate_to_folder

    if args.untrained:
        from medgen.api import build_untrained

        if args.checkpoint is not None or args.no_ema:
            raise UsageError("--untrained uses no weights: drop --checkpoint / --no-ema")
        model = build_untrained(args.run, seed=args.seed, device=args.device)
        source = {"untrained": str(Path(args.run).resolve()), "init_seed": args.seed}
    else:
        model = load(args.run, checkpoint=args.checkpoint, device=args.device, use_ema=not args.no_ema)
        source = {"checkpoint": str(model.checkpoint.resolve()), "ema": not args.no_ema}
    if not callable(getattr(model, "generate", None)):
        family = getattr(model.run_config, "family", "?")
        hint = (f"; it encodes and decodes: train `medgen train --family ldm --autoencoder {args.run}` to sample its "
                "latents" if family == "ldm-autoencoder" else
                "; it reconstructs volumes: use it with `medgen anomaly` or `medgen encode`, or train the VAE "
                "(--recipe vae) to sample" if family == "autoencoder" else
                "; it reconstructs volumes: use it with `medgen anomaly`" if family == "fanogan" else "")
        raise UsageError(f"{args.run}: a run of family {family!r}, which does not generate volumes{hint}")
    sampling = {k: getattr(args, k) for k in ("sampler", "steps", "guidance", "eta") if getattr(args, k) is not None}
    family = getattr(model.run_config, "family", "hagan")
    if sampling and getattr(model, "unet", None) is None:
        raise UsageError(f"--{next(iter(sampling))} applies to diffusion families; {args.run} is a {family} run")
    if args.truncation_psi is not None:
        import inspect

        if "truncation_psi" not in inspect.signature(model.generate).parameters:
            raise UsageError(f"--truncation-psi applies to style-based generators (stylegan2); {args.run} is a "
                             f"{family} run")
        if not 0.0 <= args.truncation_psi <= 1.0:
            raise UsageError(f"--truncation-psi {args.truncation_psi}: need a value in [0, 1]")
        sampling["truncation_psi"] = args.truncation_psi
    rows = generate_to_folder(
        model,
        args.out,
        n=args.n,
        seed=args.seed,
        label=args.label,
        chunk=args.chunk,
        batch_size=args.batch_size,
        fmt=args.format,
        mosaic=not args.no_mosaic,
        progress=not args.no_progress,
        source=source,
        sampling=sampling,
    )
    print(f"medgen generate: {len(rows)} volumes in {args.out}")
    return 0
