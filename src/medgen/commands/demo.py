"""``medgen demo``: the main job end to end on built-in thorax-CT phantoms.

Stages, each an ordinary ``medgen`` command (printed before it runs, so every
step can be repeated by hand on one's own data):

1. ``phantoms``   a training set and a held-out set of thorax-CT phantoms (NIfTI, HU)
2. ``preprocess`` both sets → training-ready folders (HU window → [-1, 1])
3. ``train``      HA-GAN, ``tiny`` preset, for ``--minutes`` of wall-clock time
4. ``generate``   full-resolution samples (NIfTI in HU + mosaics)
5. ``encode``     held-out volumes → latent vectors and reconstructions
6. ``evaluate``   samples vs held-out volumes: random-feature FID/KID/MMD/PRDC
                  (labelled as not comparable with published values), MS-SSIM
                  diversity, CT anatomy statistics, memorisation vs the training set
7. the same for the untrained generator (``generate --untrained``), the baseline
   the trained model must clearly beat
8. ``experiment latent``  latent directions that change lung and bone volume,
                  and samples along them (the paper's Figure 5)
9. ``report``     one self-contained HTML page of all of it

A rerun with the same ``--out`` continues where the last one stopped: finished
phantoms, preprocessed volumes and samples are skipped and training resumes
from its checkpoint.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from medgen.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the main job end to end on built-in thorax-CT phantoms",
        description="Phantoms → preprocessing → HA-GAN training → samples → encoding → evaluation, "
        "on built-in thorax-CT phantoms. Every stage is an ordinary medgen command, printed before it runs.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    p.add_argument("--minutes", type=float, default=8.0, help="training time in minutes (default: 8)")
    p.add_argument("--n-train", type=int, default=64, help="training phantoms (default: 64)")
    p.add_argument("--n-heldout", type=int, default=16, help="held-out phantoms for evaluation (default: 16)")
    p.add_argument("--n-samples", type=int, default=16, help="volumes to generate (default: 16)")
    p.add_argument("--size", type=int, default=64, help="volume edge length in voxels (default: 64)")
    p.add_argument("--preset", default="tiny", help="HA-GAN preset (default: tiny)")
    p.add_argument("--latent-codes", type=int, default=256,
                   help="generated volumes from which the latent directions are fitted (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (default: auto)")
    p.set_defaults(func=run)


def stages(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The demo's commands, in order (``medgen`` argv lists)."""
    out = args.out
    raw, data, run = out / "phantoms", out / "data", out / "run"
    size, seed = str(args.size), args.seed
    return [
        ("phantoms (training set)",
         ["phantoms", "--kind", "thorax-ct", "--n", str(args.n_train), "--size", size, "--seed", str(seed),
          "--out", str(raw / "train"), "--workers", "2"]),
        ("phantoms (held-out set)",
         ["phantoms", "--kind", "thorax-ct", "--n", str(args.n_heldout), "--size", size, "--seed", str(seed + 1),
          "--out", str(raw / "heldout"), "--workers", "2"]),
        ("preprocess (training set)",
         ["preprocess", str(raw / "train"), str(data / "train"), "--modality", "ct", "--size", size, "--workers", "2"]),
        ("preprocess (held-out set)",
         ["preprocess", str(raw / "heldout"), str(data / "heldout"), "--modality", "ct", "--size", size,
          "--workers", "2"]),
        ("train",
         ["train", str(data / "train"), "--out", str(run), "--preset", args.preset, "--iters", "100000",
          "--max-minutes", f"{args.minutes:g}", "--batch", "4", "--seed", str(seed), "--device", args.device,
          "--sample-every", "250", "--ckpt-every", "500", "--log-every", "25"]
         + (["--resume"] if (run / "config.yaml").exists() else [])),
        ("generate",
         ["generate", str(run), "--n", str(args.n_samples), "--out", str(out / "samples"), "--seed", str(seed)]),
        ("encode",
         ["encode", str(run), str(data / "heldout"), "--out", str(out / "latents.csv"),
          "--reconstruct", str(out / "reconstructions")]),
        ("evaluate",
         ["evaluate", "--real", str(data / "heldout"), "--train", str(data / "train"), "--fake", str(out / "samples"),
          "--features", "random", "--out", str(out / "metrics.json"), "--seed", str(seed)]),
        ("generate (untrained baseline)",
         ["generate", str(run), "--untrained", "--n", str(args.n_samples), "--out", str(out / "samples-untrained"),
          "--seed", str(seed), "--no-mosaic"]),
        ("evaluate (untrained baseline)",
         ["evaluate", "--real", str(data / "heldout"), "--fake", str(out / "samples-untrained"), "--features", "random",
          "--metrics", "fid,kid,mmd,prdc,ms_ssim,anatomy", "--out", str(out / "metrics-untrained.json"),
          "--seed", str(seed), "--no-figures"]),
        ("latent traversals",
         ["experiment", "latent", "--run", str(run), "--out", str(out / "latent"), "--work", str(out / "work"),
          "--n-codes", str(args.latent_codes), "--seed", str(seed), "--device", args.device]),
        ("report",
         ["report", str(run), "--metrics", str(out / "metrics.json"), "--baseline", str(out / "metrics-untrained.json"),
          "--traversals", str(out / "latent" / "latent_traversals.png"), "--out", str(out / "report.html"),
          "--seed", str(seed)]),
    ]


def run(args: argparse.Namespace) -> int:
    from medgen.cli import main

    if args.minutes <= 0:
        raise UsageError(f"--minutes must be positive, got {args.minutes:g}")
    if min(args.n_train, args.n_heldout, args.n_samples) < 2:
        raise UsageError("--n-train, --n-heldout and --n-samples must each be at least 2")
    plan = stages(args)
    t0 = time.monotonic()
    for i, (name, argv) in enumerate(plan, 1):
        if name == "generate" and (args.out / "samples" / "generate.json").exists():
            # samples of an earlier demo run come from an older checkpoint: make them anew
            shutil.rmtree(args.out / "samples")
        print(f"\n[{i}/{len(plan)}] {name}: medgen {' '.join(argv)}", flush=True)
        t = time.monotonic()
        code = main(argv)
        if code != 0:
            print(f"medgen demo: stage '{name}' failed (exit code {code}); fix it and rerun to continue", flush=True)
            return code
        print(f"[{i}/{len(plan)}] {name}: done in {time.monotonic() - t:.0f} s", flush=True)
    out = args.out
    results = [
        (out / "report.html", "the report: open it in a browser"),
        (out / "run" / "samples", "sample mosaics during training"),
        (out / "samples", "generated volumes (NIfTI, HU) and their mosaics"),
        (out / "metrics.json", f"metrics (figures in {out / 'metrics-figures'})"),
        (out / "latents.csv", "latent vectors of the held-out volumes"),
        (out / "latent", "latent directions for lung and bone volume, with traversals"),
    ]
    width = max(len(str(path)) for path, _ in results)
    comparison = _comparison(out)
    print(
        f"\nmedgen demo: finished in {(time.monotonic() - t0) / 60:.1f} min. Look at:\n"
        + "\n".join(f"  {str(path):<{width}}  {what}" for path, what in results)
        + f"\n  training curves: tensorboard --logdir {out / 'run' / 'tensorboard'}"
        + (f"\n\nmedgen demo: {comparison}" if comparison else ""),
        flush=True,
    )
    return 0


def _comparison(out: Path) -> str | None:
    """One line: the trained generator against the untrained one, from the two metrics files."""
    import json

    from medgen.metrics.compare import compare_reports, summary_line

    try:
        trained = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        untrained = json.loads((out / "metrics-untrained.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary_line(compare_reports(trained, untrained))
