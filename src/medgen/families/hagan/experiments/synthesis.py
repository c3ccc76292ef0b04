"""``medgen experiment synthesis``: image-quality metrics across resolutions (the paper's Table II/III).

For every resolution of the scale (demo: 32³ and 64³; full: 128³ and 256³) it
trains HA-GAN (or reuses the trained run), generates ``n_samples`` volumes and
compares them with the held-out set. Two reference rows frame each resolution:

* ``untrained generator``: the same network at its random initialisation, the
  floor a trained model must clearly beat;
* ``real (training set)``: the training volumes themselves against the held-out
  set, the best a model can do with this many volumes (sampling noise of the
  metrics included).

Writes ``synthesis.csv``/``synthesis.md`` and the evaluation JSON of every row.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medgen.families.hagan.experiments.workspace import (
    METRIC_COLUMNS,
    METRIC_NOTES,
    ExperimentOutput,
    Workspace,
    checkpoint_iteration,
    metric_row,
)

HELP = "metrics of generated volumes across resolutions, against untrained and real references"
DESCRIPTION = __doc__.split("\n\n", 1)[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=None, metavar="S,S",
                   help="resolutions to train and evaluate (default: demo 32,64; full 128,256; with --data its size)")


def _sizes(ws: Workspace, args: argparse.Namespace) -> list[int]:
    from medgen.core.errors import UsageError

    if args.sizes:
        try:
            sizes = [int(s) for s in args.sizes.split(",")]
        except ValueError:
            raise UsageError(f"--sizes {args.sizes!r}: need comma-separated integers, e.g. 32,64") from None
    elif args.run is not None:
        sizes = [ws.run_size(Path(args.run))]
    elif ws.data is not None:
        sizes = [ws.main_size]
    else:
        sizes = list(ws.scale.sizes)
    if args.run is not None and sizes != [ws.run_size(Path(args.run))]:
        raise UsageError(f"--run {args.run} is a {ws.run_size(Path(args.run))}³ model; --sizes must be that size alone")
    return sizes


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    eval_dir = out.path("evaluations")
    extractor = "med3d" if args.features == "med3d" else "random"
    for size in _sizes(ws, args):
        train_dir, heldout_dir = ws.datasets(size)
        run_dir = Path(args.run) if args.run is not None else ws.model(f"hagan-{size}", size)
        cases = [
            ("HA-GAN (trained)", checkpoint_iteration(run_dir), lambda: ws.samples(run_dir, f"synthesis-{size}")),
            ("untrained generator", 0, lambda: ws.untrained_samples(size, f"untrained-{size}")),
            ("real (training set)", None, lambda: train_dir),
        ]
        for label, iters, fake in cases:
            slug = label.split(" ")[0].lower().replace("-", "")
            report = ws.evaluate(heldout_dir, fake(), eval_dir / f"{size}-{slug}.json",
                                 features=args.features, weights=args.weights, n=ws.scale.n_samples,
                                 metrics="fid,mmd,prdc,ms_ssim,anatomy")
            rows.append({"size": size, "model": label, "iterations": iters, "features": extractor,
                         **metric_row(report)})
    columns = ("size", "model", "iterations", "features", *METRIC_COLUMNS)
    notes = [*METRIC_NOTES,
             f"{ws.scale.n_samples} volumes per set at most; held-out phantoms are the reference set."
             if ws.uses_phantoms else f"{ws.scale.n_samples} volumes per set at most; --heldout is the reference set."]
    out.write_table(rows, columns, title="Synthesis quality across resolutions", notes=notes)
    return {"rows": rows}
