"""``medgen demo``: the main job end to end on built-in data.

Stages (each shows its own progress): thorax-CT phantoms → preprocessing.
Later stages (training, sampling, encoding, evaluation, report) are appended
as they become available.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the main job end to end on built-in thorax-CT phantoms",
        description="Generate thorax-CT phantoms and preprocess them into a training-ready data set.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    p.add_argument("--n", type=int, default=48, help="number of phantom volumes (default: 48)")
    p.add_argument("--size", type=int, default=64, help="volume edge length in voxels (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.cli import main

    out: Path = args.out
    raw, data = out / "phantoms", out / "data"
    stages = [
        ("phantoms", ["phantoms", "--kind", "thorax-ct", "--n", str(args.n), "--size", str(args.size),
                      "--seed", str(args.seed), "--out", str(raw), "--overwrite"]),
        ("preprocess", ["preprocess", str(raw), str(data), "--modality", "ct", "--size", str(args.size)]),
    ]
    t0 = time.monotonic()
    for i, (name, argv) in enumerate(stages, 1):
        print(f"[{i}/{len(stages)}] medgen {' '.join(argv)}", flush=True)
        code = main(argv)
        if code != 0:
            print(f"medgen demo: stage '{name}' failed with exit code {code}")
            return code
    print(f"medgen demo: done in {time.monotonic() - t0:.0f} s; outputs in {out}")
    return 0
