"""``medgen train``: train HA-GAN on a preprocessed data set.

Examples::

    medgen train data/thorax64 --preset tiny --out runs/t64 --iters 500
    medgen train data/thorax64 --out runs/t64 --resume --iters 1000      # continue, longer
    medgen train --out runs/t64 --resume                                  # continue on the saved data folder
    torchrun --nproc_per_node 4 -m medgen train data/ct256 --out runs/ct256 --batch 8

Exit codes: 0 done, 1 a loss diverged (NaN/inf; the last good checkpoint is
kept), 2 usage/input error, 130 stopped by Ctrl-C/SIGTERM after saving a
checkpoint (continue with ``--resume``).
"""

from __future__ import annotations

import argparse

from medgen.core.errors import EXIT_INTERRUPTED, UsageError

# Options that map 1:1 onto options of medgen.families.run_config.new_run_config (dest → option name).
_OPTIONS = {
    "iters": "iters",
    "max_minutes": "max_minutes",
    "batch": "batch",
    "lr_g": "lr_g",
    "lr_d": "lr_d",
    "lr_e": ("lr_eh", "lr_eg"),
    "seed": "seed",
    "device": "device",
    "precision": "precision",
    "workers": "workers",
    "log_every": "log_every",
    "sample_every": "sample_every",
    "ckpt_every": "ckpt_every",
    "keep": "keep_checkpoints",
    "num_samples": "num_samples",
    "ema_decay": "ema_decay",
    "class_weight": "class_weight",
    "slab_selection": "slab_selection",
    "class_loss": "class_loss",
    "fake_labels": "fake_labels",
    "label_column": "label_column",
    "split_seed": "split_seed",
    "split_fractions": "split_fractions",
}
# Options that change the model (the family's architecture fields).
_MODEL_OPTIONS = ("size", "width", "high_width", "low_d_width", "lowres_factor", "slab_fraction", "latent_dim", "num_classes", "autoencoder_run", "generator_run", "slab_context", "common_modulation",
                  "minibatch_std", "minibatch_std_channels", "histogram_bins", "d_windows", "class_conditioning", "task", "inputs", "target")


def _hparam(text: str) -> tuple[str, object]:
    """``"lr=2e-4"`` → ("lr", 0.0002): a family hyper-parameter, its value read as YAML (numbers, true/false, lists)."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: need NAME=VALUE (e.g. lr=2e-4)")
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not a number, word or list") from None


def _fractions(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` → (0.8, 0.1, 0.1); three non-negative numbers summing to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6 or parts[0] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: need TRAIN,VAL,TEST, three non-negative numbers summing to 1, TRAIN > 0")
    return parts  # type: ignore[return-value]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a generative model (default HA-GAN) on a preprocessed data set",
        description=(
            "Train a model family (--family; default hagan: generator, discriminator and hierarchical encoder) "
            "on a folder written by `medgen preprocess`. Writes RUN/config.yaml, checkpoints, TensorBoard logs, "
            "RUN/metrics.csv and sample mosaics. Launch with torchrun for several GPUs/nodes; "
            "--batch is the global batch. Ctrl-C or SIGTERM saves a checkpoint and exits with code 130."
        ),
    )
    p.add_argument("data", nargs="?", default=None,
                   help="preprocessed data set folder (manifest.csv, volumes/, preprocess.json); with --resume "
                        "it may be left out: the run's saved folder")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write (or to continue with --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN from its latest checkpoint; options not given keep their saved values")
    m = p.add_argument_group("model")
    m.add_argument("--family", default=None,
                   help="model family from the registry (default hagan; `medgen model-info --family NAME` describes one)")
    m.add_argument("--preset", default=None,
                   help="model preset (default: the family's; HA-GAN: paper = the published architecture, small, compact, tiny)")
    m.add_argument("--size", type=int, default=None, help="volume edge length S in voxels (default: the data set's)")
    m.add_argument("--width", type=float, default=None, help="channel-width multiplier (overrides the preset)")
    m.add_argument("--high-width", type=float, default=None,
                   help="hagan: channel-width multiplier of G^H's hidden layers alone (default: --width)")
    m.add_argument("--slab-fraction", type=float, default=None, metavar="FRAC",
                   help="hagan: training slab depth / volume depth, what G^H makes and D^H judges per volume "
                        "(paper 0.125)")
    m.add_argument("--low-d-width", type=float, default=None,
                   help="hagan: channel-width multiplier of the low-resolution discriminator D^L alone (default: --width)")
    m.add_argument("--lowres-factor", type=int, default=None, metavar="F",
                   help="hagan: full / low resolution ratio, a power of two (paper 4; at 64³ a factor of 2 puts A and "
                        "D^L's volume at 32³ and makes each iteration slower)")
    m.add_argument("--latent-dim", type=int, default=None, help="length of z (overrides the preset)")
    m.add_argument("--num-classes", type=int, default=None,
                   help="classes for the AC-GAN conditional variant (default: 0, or inferred from --label-column); "
                        "seg-unet: the label map's classes (default: from preprocess.json)")
    m.add_argument("--label-column", default=None, help="manifest column with the class labels (conditional training)")
    m.add_argument("--autoencoder", dest="autoencoder_run", default=None, metavar="RUN",
                   help="ldm: the trained `--family ldm-autoencoder` run whose latents the model diffuses")
    m.add_argument("--generator", dest="generator_run", default=None, metavar="RUN",
                   help="fanogan: the trained `--family hagan` run whose frozen generator and discriminator "
                        "the encoder is trained against")
    i = p.add_argument_group("image-to-image families (unet, pix2pix, cond-ddpm) on a paired data set (`medgen degrade`); "
                             "cyclegan on an unpaired one (`medgen unpair`)")
    i.add_argument("--task", default=None, choices=("sr", "denoise", "kspace", "restore", "inpaint", "outpaint", "xray2ct",
                                                       "seg2image", "translate"),
                   help="what the model learns; sets the input volumes and the residual mode (default denoise)")
    i.add_argument("--inputs", default=None, metavar="NAMES",
                   help="comma-separated input volumes, stacked as channels (default: the task's, e.g. degraded; "
                        "cyclegan: domain A's volume, default image)")
    i.add_argument("--target", default=None, metavar="NAME", help="the volume to predict (default image; seg-unet: the label volume, default tissue; "
                                                       "cyclegan: domain B's volume, default b)")
    t = p.add_argument_group("optimisation (defaults: the paper's)")
    t.add_argument("--iters", type=int, default=None, help="total training iterations (default 80000)")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes of training (wall clock), saving a checkpoint; "
                        "--resume continues the run (default: no limit)")
    t.add_argument("--batch", type=int, default=None, help="global batch size over all processes (default 4)")
    t.add_argument("--lr-g", type=float, default=None, help="generator Adam learning rate (default 1e-4)")
    t.add_argument("--lr-d", type=float, default=None, help="discriminator Adam learning rate (default 4e-4)")
    t.add_argument("--lr-e", type=float, default=None, help="encoders' (E^H, E^G) Adam learning rate (default 1e-4)")
    t.add_argument("--class-weight", type=float, default=None, help="λ of the generator's class loss (default 0.1)")
    t.add_argument("--ema-decay", type=float, default=None,
                   help="decay of the generator EMA used for sampling; 0 disables it (default 0.999)")
    t.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    t.add_argument("--split-seed", type=int, default=None, help="seed of the train/val/test split (default 0)")
    t.add_argument("--split-fractions", type=_fractions, default=None, metavar="TRAIN,VAL,TEST",
                   help="shares of the train/val/test split; training uses the train share "
                        "(default 0.8,0.1,0.1; 1,0,0 trains on every volume of the folder)")
    h = p.add_argument_group("HA-GAN method (defaults: medgen's; --recipe paper for the paper's exact method, "
                             "--recipe ct for medgen's CT settings)")
    h.add_argument("--recipe", default=None, metavar="NAME",
                   help="a family's named settings; hagan: paper = zero-padded training slabs, no minibatch std; "
                        "ct = medgen's settings for CT, the demo's: --d-windows lung,bone --lr-g 2e-4 --hparam "
                        "r1_gamma=1 --hparam diversity_weight=0.3 (options given explicitly still win)")
    h.add_argument("--slab-context", choices=("exact", "halo", "zero-padded"), default=None,
                   help="how G^H sees the training slab: exact = with its real neighbours and the whole volume's "
                        "GroupNorm statistics, so it equals the inference slab (default); halo = neighbours only; "
                        "zero-padded = the paper")
    h.add_argument("--common-modulation", action="store_const", const=True, default=None,
                   help="G^A scales and shifts each GroupNorm's output per volume by a linear map of z "
                        "(off by default and in the paper)")
    h.add_argument("--minibatch-std", type=int, default=None, metavar="G",
                   help="group size of the minibatch standard-deviation feature in D^H and D^L; 0 = none, the paper "
                        "(default 4)")
    h.add_argument("--minibatch-std-channels", type=int, default=None, metavar="K",
                   help="hagan: split D's last features into K sets, each with its own minibatch standard deviation "
                        "(default 1: one average)")
    h.add_argument("--histogram-bins", type=int, default=None, metavar="N",
                   help="give D^H and D^L the intensity distribution of what they judge (log cumulative shares "
                        "of N bins over [-1, 1]); 0 = none, the paper (default 0)")
    h.add_argument("--d-windows", default=None, metavar="NAME,NAME",
                   help="CT: D (and a classifier C) also see their input through these HU windows, one input channel "
                        "each: lung (-1024..-500), soft-tissue (-160..240), bone (300..1500); none = no window "
                        "(default, the paper)")
    h.add_argument("--class-conditioning", choices=("ac", "projection", "classifier"), default=None,
                   help="conditional models: how D uses the class; ac = class heads and a class loss (default, the "
                        "paper's AC-GAN), projection = D is given the class (Miyato & Koyama 2018), classifier = D is "
                        "unconditional and a separate classifier trained on the real volumes gives G its class loss")
    h.add_argument("--class-loss", choices=("mean", "per-head"), default=None,
                   help="conditional models: one cross-entropy on the mean class logits of D^H and D^L (default, "
                        "the paper's code), or one per head")
    h.add_argument("--fake-labels", choices=("uniform", "real"), default=None,
                   help="conditional models: classes asked of G in training, uniform (default, the paper) or the "
                        "real batch's labels")
    a = p.add_argument_group("ablations (paper §IV)")
    a.add_argument("--no-lowres", action="store_true", help="without the low-resolution branch (no G^L, no D^L)")
    a.add_argument("--no-encoder", action="store_true", help="without the encoder (E^H, E^G not built or trained)")
    a.add_argument("--slab-selection", choices=("random", "deterministic"), default=None,
                   help="random slab starts (default) or deterministic: cycle through the non-overlapping slabs")
    r = p.add_argument_group("running and logging")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="auto = cuda if available (default)")
    r.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                   help="auto = bf16 autocast on CUDA, fp32 on CPU (default)")
    r.add_argument("--workers", type=int, default=None, help="data loader worker processes (default: 2 on CUDA, 0 on CPU)")
    r.add_argument("--log-every", type=int, default=None, help="log losses every N iterations (default 20)")
    r.add_argument("--sample-every", type=int, default=None, help="write a sample mosaic every N iterations; 0 = never (default 500)")
    r.add_argument("--ckpt-every", type=int, default=None, help="save a checkpoint every N iterations (default 1000)")
    r.add_argument("--keep", type=int, default=None, help="number of checkpoints to keep (default 3)")
    r.add_argument("--num-samples", type=int, default=None, help="volumes in each sample mosaic (default 4)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--hparam", type=_hparam, action="append", default=[], metavar="NAME=VALUE",
                   help="any hyper-parameter of the family, repeatable (e.g. ddpm: --hparam lr=2e-4 "
                        "--hparam class_dropout=0.2; `medgen model-info --family NAME` lists them)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The RunConfig for this invocation (saved settings + options given, when resuming)."""
    from medgen.families.run_config import new_run_config

    options: dict = {}
    for dest, names in _OPTIONS.items():
        for name in names if isinstance(names, tuple) else (names,):
            options[name] = getattr(args, dest)
    if args.no_encoder:
        options["use_encoder"] = False
    for name, value in args.hparam:
        if options.get(name) is not None and options[name] != value:
            raise UsageError(f"--hparam {name}={value} contradicts --{name.replace('_', '-')} {options[name]}")
        options[name] = value
    model_options = {k: getattr(args, k) for k in _MODEL_OPTIONS}
    if args.no_lowres:
        model_options["use_lowres"] = False
    return new_run_config(args.data, args.out, family=args.family, preset=args.preset, resume=args.resume,
                          model_options=model_options, options=options, recipe=args.recipe)


def run(args: argparse.Namespace) -> int:
    from medgen.families import registry

    cfg = build_config(args)
    result = registry.train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    return EXIT_INTERRUPTED if result.interrupted else 0
