"""``medgen experiment synthesis``: image-quality metrics across resolutions (the paper's Table II/III).

For every resolution of the scale (demo: 32³ and 64³; full: 128³ and 256³) it
trains HA-GAN (or reuses the trained run), generates ``n_samples`` volumes and
compares them with the held-out set. Two reference rows frame each resolution:

* ``untrained generator``: the same network at its random initialisation, the
  floor a trained model must clearly beat;
* ``real (training set)``: the training volumes themselves against the held-out
  set, the best a model can do with this many volumes (sampling noise of the
  metrics included).

``--families hagan,ddpm,ldm`` adds a row per generator family, side by side on
the same phantoms, features and metrics. ``--minutes M`` gives every family the
same training budget: M minutes of training iterations, converted into an
iteration count per family from its measured seconds per iteration (``medgen
bench train``, in a fresh process, just before training), so the runs stay
reproducible and resumable while their cost is equal; ``ldm`` spends half of M
on its autoencoder and half on the latent diffusion model. Diffusion models
sample with 50 DDIM steps.

Writes ``synthesis.csv``/``synthesis.md`` and the evaluation JSON of every row.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medgen.experiments.workspace import (
    METRIC_COLUMNS,
    METRIC_NOTES,
    ExperimentOutput,
    Workspace,
    checkpoint_iteration,
    metric_row,
)

HELP = "metrics of generated volumes across resolutions, against untrained and real references"
DESCRIPTION = __doc__.split("\n\n", 1)[1]


FAMILY_LABELS = {"hagan": "HA-GAN", "ddpm": "DDPM", "ldm": "LDM"}
DEFAULTS = {"families": "hagan"}  # left out of the canonical command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=None, metavar="S,S",
                   help="resolutions to train and evaluate (default: demo 32,64; full 128,256; with --data its size)")
    p.add_argument("--families", default="hagan", metavar="F,F",
                   help="generator families side by side: hagan, ddpm, ldm (default hagan)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="the same training budget for every family: M minutes of iterations at each family's "
                        "measured speed (default: the scale's iterations for every family)")


def _families(args: argparse.Namespace) -> list[str]:
    from medgen.core.errors import UsageError

    names = [f.strip() for f in str(args.families).split(",") if f.strip()]
    bad = [f for f in names if f not in FAMILY_LABELS]
    if not names or bad:
        raise UsageError(f"--families {args.families!r}: choose from {', '.join(FAMILY_LABELS)}")
    if args.run is not None and names != ["hagan"]:
        raise UsageError("--run evaluates one trained HA-GAN run; leave --families out")
    if args.minutes is not None and not args.minutes > 0:
        raise UsageError(f"--minutes {args.minutes}: need a positive budget")
    return names


def budget_iterations(ws: Workspace, family: str, name: str, size: int, minutes: float) -> int:
    """Iterations of ``family`` that take ``minutes`` of training at its measured speed (cached in WORK/runs)."""
    import json

    from medgen.core.fileio import atomic_write_json
    from medgen.families import registry

    record = ws.root / "runs" / f"{name}.budget.json"
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("minutes") == minutes:
            return int(saved["iterations"])
    fam = registry.get(family)
    preset = ws.scale.preset if ws.scale.preset in fam.presets else fam.default_preset
    device = ws.torch_device().type
    print(f"\nmedgen bench train --family {family} --preset {preset} --size {size} --batch {ws.scale.batch} "
          f"--device {device} --warmup 2 --repeats 5", flush=True)
    r = fam.bench.run_isolated("train", preset=preset, size=size, batch=ws.scale.batch, device=device, warmup=2,
                               repeats=5)
    iterations = max(1, int(minutes * 60 / r["seconds_median"]))
    atomic_write_json(record, {"family": family, "minutes": minutes, "seconds_per_iteration": r["seconds_median"],
                               "iterations": iterations, "preset": preset, "size": size, "batch": ws.scale.batch})
    return iterations


def write_budgets(ws: Workspace, out: ExperimentOutput, families: list[str], sizes: list[int], minutes: float) -> Path:
    """``budgets.csv``: the measured seconds per iteration and the iterations of every budgeted run."""
    import json

    from medgen.core.tables import write_csv

    rows = []
    for size in sizes:
        for family in families:
            stages = [("ldm-autoencoder", f"ldm-autoencoder-{size}"), ("ldm", f"ldm-{size}")] if family == "ldm" \
                else [(family, f"{family}-{size}")]
            for fam, name in stages:
                record = ws.root / "runs" / f"{name}-{minutes:g}min.budget.json"
                if record.is_file():
                    rows.append(json.loads(record.read_text(encoding="utf-8")))
    return write_csv(out.path("budgets.csv"), rows,
                     ("family", "preset", "size", "batch", "minutes", "seconds_per_iteration", "iterations"))


def _family_run(ws: Workspace, family: str, size: int, minutes: float | None, calibrate_only: bool = False) -> Path | None:
    """The trained run of ``family`` at ``size``³ (within the budget of ``minutes`` when given).

    ``calibrate_only``: measure the iteration budgets, train nothing."""
    tag = f"-{minutes:g}min" if minutes else ""
    if family == "ldm":
        half = None if minutes is None else minutes / 2
        ae_name, name = f"ldm-autoencoder-{size}{tag}", f"ldm-{size}{tag}"
        ae_iters = budget_iterations(ws, "ldm-autoencoder", ae_name, size, half) if half else None
        iters = budget_iterations(ws, "ldm", name, size, half) if half else None
        if calibrate_only:
            return None
        ae = ws.model(ae_name, size, family="ldm-autoencoder", iters=ae_iters)
        return ws.model(name, size, family="ldm", iters=iters, autoencoder_run=ae)
    name = f"{family}-{size}{tag}"
    iters = budget_iterations(ws, family, name, size, minutes) if minutes else None
    return None if calibrate_only else ws.model(name, size, family=family, iters=iters)


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
    families = _families(args)
    notes_extra: list[str] = []
    sizes = _sizes(ws, args)
    if args.minutes and args.run is None:
        # every family's speed measured first, back to back, under the same machine load
        for size in sizes:
            ws.datasets(size)
            for family in families:
                _family_run(ws, family, size, args.minutes, calibrate_only=True)
    for size in sizes:
        train_dir, heldout_dir = ws.datasets(size)
        cases = []
        for family in families:
            run_dir = Path(args.run) if args.run is not None else _family_run(ws, family, size, args.minutes)
            sample_name = f"synthesis-{size}" if family == "hagan" and not args.minutes else f"synthesis-{run_dir.name}"
            if family == "ldm":
                ae_iters = checkpoint_iteration(run_dir.with_name(run_dir.name.replace("ldm-", "ldm-autoencoder-", 1)))
                notes_extra.append(f"LDM at {size}³: its autoencoder trained {ae_iters} iterations, then the latent "
                                   f"diffusion model the iterations in the table.")
            cases.append((f"{FAMILY_LABELS[family]} (trained)", checkpoint_iteration(run_dir),
                          lambda r=run_dir, n=sample_name: ws.samples(r, n)))
        cases += [
            ("untrained generator", 0, lambda: ws.untrained_samples(size, f"untrained-{size}")),
            ("real (training set)", None, lambda: train_dir),
        ]
        for label, iters, fake in cases:
            slug = label.split(" ")[0].lower().replace("-", "")
            report = ws.evaluate(heldout_dir, fake(), eval_dir / f"{size}-{slug}.json",
                                 features=args.features, weights=args.weights, n=ws.scale.n_samples,
                                 metrics="fid,mmd,prdc,ms_ssim,anatomy")
            rows.append({"size": size, "model": label, "iterations": iters,
                         "budget_minutes": args.minutes if label.endswith("(trained)") else None, "features": extractor,
                         **metric_row(report)})
    columns = ("size", "model", "iterations", *(("budget_minutes",) if args.minutes else ()), "features",
               *METRIC_COLUMNS)
    notes = [*METRIC_NOTES,
             f"{ws.scale.n_samples} volumes per set at most; held-out phantoms are the reference set."
             if ws.uses_phantoms else f"{ws.scale.n_samples} volumes per set at most; --heldout is the reference set.",
             *notes_extra]
    if args.minutes:
        if args.run is None:
            write_budgets(ws, out, families, sizes, args.minutes)
        notes.append(f"budget_minutes: every family trained for the iterations its measured speed (`medgen bench train`, "
                     f"budgets.csv) fits into {args.minutes:g} minutes; diffusion models sampled with 50 DDIM steps.")
    out.write_table(rows, columns, title="Synthesis quality across resolutions", notes=notes)
    return {"rows": rows}
