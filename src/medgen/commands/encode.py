"""``medgen encode``: latent vectors (and reconstructions) of real volumes.

Examples::

    medgen encode runs/t64 data/thorax64 --out latents.csv
    medgen encode runs/t64 data/thorax64 --out latents.csv --reconstruct recon/ --split test

Each volume of the preprocessed folder DATA is encoded as in training (E^H on
each slab, E^G on the whole feature map). latents.csv holds the id, the
manifest's label/covariate columns, z_0 ... z_{d-1} and, with --reconstruct,
recon_l1: the mean absolute voxel error of G(E(x)) in the preprocessed [-1, 1]
units (plus recon_l1_hu in Hounsfield units for CT). Reconstructions are
written as DIR/<id>.nii.gz.

An ``ldm-autoencoder`` or ``ldm`` run encodes with its KL autoencoder: each
volume's spatial latent (the means μ, [C, S/4, S/4, S/4]) is written to
``<CSV stem>-latents/<id>.npy`` and latents.csv names the file (latent_file,
latent_mean, latent_std); --reconstruct decodes them (--chunk: that many latent
slices at a time).

Exit codes: 0 done, 2 usage/input error (not a run folder, no encoder, volume
size differs from the model's).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encode",
        help="encode real volumes into the latent space of a trained model (HA-GAN, ldm, ldm-autoencoder)",
        description=(
            "Encode every volume of a preprocessed data set with the trained hierarchical encoder "
            "(E^H over all slabs, then E^G) and write one CSV row per volume: id, the manifest's "
            "covariates, z_0..z_{d-1}; optionally reconstruct the volumes and report their error. "
            "ldm and ldm-autoencoder runs: the KL autoencoder's spatial latents, one .npy file per volume "
            "next to the CSV."
        ),
        epilog="Exit codes: 0 success, 2 usage or input error, 130 interrupted.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder (written by `medgen train`)")
    p.add_argument("data", metavar="DATA", help="preprocessed data set folder (written by `medgen preprocess`)")
    p.add_argument("--out", required=True, metavar="CSV", help="latent vectors CSV to write")
    p.add_argument("--reconstruct", default=None, metavar="DIR",
                   help="also write G(E(x)) as DIR/<id>.nii.gz and the reconstruction error columns")
    p.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                   help="which volumes: all (default) or a split as defined by the run's split settings")
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="volumes per forward pass (default 1)")
    p.add_argument("--chunk", type=int, default=None, metavar="D",
                   help="reconstruct in depth chunks (bounded memory): HA-GAN G^H D feature-map slices at a time, "
                        "an autoencoder D latent slices at a time")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available (default)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="checkpoint folder RUN/checkpoints/iter-NNNNNN (default: the latest)")
    p.add_argument("--ema", action="store_true",
                   help="reconstruct with the generator's EMA copy (default: the trained generator, "
                        "the one the encoder was trained to invert)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.api import load
    from medgen.inference.encode import encode_folder

    model = load(args.run, checkpoint=args.checkpoint, device=args.device, use_ema=args.ema)
    if not callable(getattr(model, "encode", None)):
        from medgen.core.errors import UsageError

        family = getattr(model.run_config, "family", "?")
        raise UsageError(f"{args.run}: a run of family {family!r}, which has no encoder")
    rows = encode_folder(
        model,
        args.data,
        args.out,
        reconstruct_dir=args.reconstruct,
        split=args.split,
        batch_size=args.batch_size,
        chunk=args.chunk,
        progress=not args.no_progress,
    )
    print(f"medgen encode: {len(rows)} volumes encoded into {args.out}")
    return 0
