"""``medgen bench``: seconds per training iteration or per generated volume, and peak memory.

Examples::

    medgen bench generate --preset paper --size 256 --chunk 16 --device cpu
    medgen bench train --preset paper --size 128 --batch 2 --device cpu --json
    medgen bench train --preset paper --size 256 --batch 4 --device cuda

Each measurement runs in a fresh Python process, so the peak memory is that of
the configuration alone (CPU: peak resident set size; CUDA: peak allocated
tensor memory). See :mod:`medgen.families.hagan.bench` for exactly what is timed.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure training / generation speed and peak memory of a model preset",
        description=(
            "Time one training iteration (the four updates D, G, E^H, E^G of the real training loop, on "
            "random data) or the generation of one volume (G^A then G^H, optionally chunked): median after "
            "warm-up, plus peak memory (CUDA: max allocated; CPU: peak RSS of a fresh process) and parameters."
        ),
        epilog="Exit codes: 0 success, 1 the measurement failed (e.g. out of memory), 2 usage error.",
    )
    p.add_argument("kind", choices=("train", "generate"), help="what to time")
    p.add_argument("--family", default="hagan", help="model family (default hagan)")
    p.add_argument("--preset", default=None, help="model preset (default: the family's; HA-GAN: paper, small, compact, tiny)")
    p.add_argument("--size", type=int, default=128, metavar="S", help="volume edge length (default 128)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="batch size (default: train 2 on CPU / 4 on CUDA; generate 1)")
    p.add_argument("--chunk", type=int, default=None, metavar="D",
                   help="generate: G^H in depth chunks of D feature-map slices (default: unchunked)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="train: auto = bf16 autocast on CUDA, fp32 on CPU (as `medgen train`)")
    p.add_argument("--warmup", type=int, default=1, metavar="W", help="untimed runs first (default 1)")
    p.add_argument("--repeats", type=int, default=3, metavar="R", help="timed runs; the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=None, metavar="T", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion families, generate: denoising steps per volume (default 50 DDIM steps)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default=None, help="diffusion families, generate: the sampler")
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help="train: the family's named settings instead of medgen's defaults (hagan: paper)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from medgen.core.errors import UsageError
    from medgen.families import registry

    family = registry.get(args.family)
    if family.bench is None:
        raise UsageError(f"family {family.name!r} has no benchmark (families with one: "
                         f"{', '.join(n for n, f in registry.FAMILIES.items() if f.bench is not None)})")
    check_request, describe, run_isolated = family.bench.check_request, family.bench.describe, family.bench.run_isolated
    preset = args.preset or family.default_preset
    extra = {k: getattr(args, k) for k in ("steps", "sampler") if getattr(args, k) is not None}
    unknown = [k for k in extra if k not in getattr(family.bench, "SAMPLING_OPTIONS", ())]
    if unknown:
        raise UsageError(f"--{unknown[0]} does not apply to family {family.name!r} (diffusion families only)")
    if args.recipe is not None:
        if args.kind != "train":
            raise UsageError("--recipe applies to bench train (generation is the same under every recipe)")
        if args.recipe not in family.recipes:
            raise UsageError(f"--recipe {args.recipe}: family {family.name!r} has recipes: "
                             f"{', '.join(family.recipes) or 'none'}")
        extra["recipe"] = args.recipe
    batch = args.batch or (1 if args.kind == "generate" else (4 if args.device == "cuda" else 2))
    check_request(args.kind, preset, args.size, batch, args.warmup, args.repeats, args.device)
    result = run_isolated(
        args.kind,
        preset=preset,
        size=args.size,
        batch=batch,
        chunk=args.chunk,
        device=args.device,
        precision=args.precision,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        **extra,
    )
    print(json.dumps(result, indent=2) if args.json else describe(result))
    return 0
