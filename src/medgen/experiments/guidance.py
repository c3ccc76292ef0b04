"""``medgen experiment guidance``: does a class-conditional diffusion model make the anatomy of the class asked for?

1. A class-conditional diffusion model (``--family ddpm``, the default, or ``ldm`` with
   its autoencoder) is trained on the thorax-CT phantoms' emphysema-severity classes
   (``label`` 0-3) at the scale's small size, with label dropout for classifier-free
   guidance; ``--minutes M`` sets the training budget as ``experiment synthesis`` does
   (iterations from the measured speed), else the scale's iterations.
2. For every guidance weight (``--guidance``, default 0,1,2,4: 0 the unconditional model,
   1 the plain conditional one) it generates ``--per-class`` volumes of every class with 50
   DDIM steps (the same seeds for every weight and class).
3. Each volume's emphysema % (LAA-950 of the lung, :func:`medgen.metrics.anatomy.ct_anatomy`)
   is measured, as is every real training volume's.

Writes ``guidance.csv``/``.md``: per weight the Spearman correlation between requested
class and measured emphysema % (over all volumes), the per-class means and whether each lies
in the real class's interquartile range; ``guidance-volumes.csv``: every generated volume
(weight, class, index, emphysema %). The target of a working conditional model: Spearman
≥ 0.8 at some weight > 0, every class mean inside the real IQR.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from medgen.core.tables import write_csv
from medgen.experiments.workspace import ExperimentOutput, Workspace, checkpoint_iteration

HELP = "class-conditional diffusion: measured emphysema of generated volumes per requested class and guidance weight"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
LABEL_COLUMN = "label"
STEPS = 50
DEFAULTS = {"family": "ddpm", "guidance": "0,1,2,4", "per_class": 8}  # left out of the canonical command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=("ddpm", "ldm"), default="ddpm",
                   help="the diffusion family (default ddpm)")
    p.add_argument("--guidance", default="0,1,2,4", metavar="W,W",
                   help="classifier-free guidance weights (default 0,1,2,4)")
    p.add_argument("--per-class", type=int, default=8, metavar="N", help="volumes per class and weight (default 8)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="training budget: M minutes of iterations at the family's measured speed "
                        "(default: the scale's iterations)")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of the finite pairs (ties get average ranks; ``scipy.stats.spearmanr``)."""
    from scipy.stats import spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def real_class_emphysema(train_dir, progress: bool = False):
    """The real training set's classes and emphysema: (volume set, label per volume (-1: none), classes,
    emphysema % per volume, per class {"mean", "q1", "q3", "n"}). UsageError with fewer than two classes."""
    from medgen.core.errors import UsageError
    from medgen.data.dataset import load_manifest
    from medgen.experiments.augmentation import emphysema_percentages
    from medgen.metrics.volumes import open_volume_set

    real_vs = open_volume_set(train_dir, what="--data")
    by_id = {r["id"]: r for r in load_manifest(train_dir)}
    labels = np.array([int(float(by_id[i].get(LABEL_COLUMN) or -1)) for i in real_vs.ids])
    classes = sorted(int(c) for c in np.unique(labels[labels >= 0]))
    if len(classes) < 2:
        raise UsageError(f"{train_dir}/manifest.csv: column {LABEL_COLUMN!r} needs at least two classes")
    emph = emphysema_percentages(real_vs, progress=progress, desc="emphysema (real)")
    stats = {}
    for c in classes:
        v = emph[(labels == c) & np.isfinite(emph)]
        stats[c] = {"mean": float(v.mean()), "q1": float(np.percentile(v, 25)), "q3": float(np.percentile(v, 75)),
                    "n": int(v.size)}
    return real_vs, labels, classes, emph, stats


def _weights(text: str) -> list[float]:
    from medgen.core.errors import UsageError

    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise UsageError(f"--guidance {text!r}: need comma-separated weights, e.g. 0,1,2,4") from None
    if not weights or any(w < 0 for w in weights):
        raise UsageError(f"--guidance {text!r}: need weights >= 0")
    return weights


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.core.errors import UsageError
    from medgen.experiments.augmentation import emphysema_percentages
    from medgen.experiments.synthesis import budget_iterations
    from medgen.metrics.volumes import open_volume_set

    weights = _weights(args.guidance)
    if args.per_class < 2:
        raise UsageError(f"--per-class {args.per_class}: need at least 2")
    family = args.family
    size = ws.scale.small_size
    train_dir, _ = ws.datasets(size)
    real_vs, real_labels, classes, real_emph, real_stats = real_class_emphysema(train_dir, ws.progress)

    # ---- the class-conditional model
    tag = f"guidance-{family}-{size}" + (f"-{args.minutes:g}min" if args.minutes else "")
    half = args.minutes / 2 if (args.minutes and family == "ldm") else args.minutes
    autoencoder = None
    if family == "ldm":
        ae_name = f"{tag}-autoencoder"
        ae_iters = budget_iterations(ws, "ldm-autoencoder", ae_name, size, half) if half else None
        autoencoder = ws.model(ae_name, size, family="ldm-autoencoder", iters=ae_iters)
    iters = budget_iterations(ws, family, tag, size, half) if half else None
    run_dir = ws.model(tag, size, family=family, iters=iters, label_column=LABEL_COLUMN, autoencoder_run=autoencoder)

    # ---- generated volumes per weight and class
    rows, volume_rows = [], []
    for w in weights:
        cls, emph = [], []
        for c in classes:
            folder = ws.samples(run_dir, f"{tag}-w{w:g}-class{c}", n=args.per_class, label=c,
                                sampling={"steps": STEPS, "guidance": float(w)})
            vs = open_volume_set(folder, what="samples")
            vs.inherit(real_vs)  # .npy in [-1, 1]: the training data's modality and CT window
            e = emphysema_percentages(vs, progress=ws.progress, desc=f"emphysema (w {w:g}, class {c})")
            cls += [c] * len(e)
            emph += list(e)
            volume_rows += [{"guidance": w, "class": c, "index": i, "emphysema_pct": float(x)} for i, x in enumerate(e)]
        cls_a, emph_a = np.array(cls, dtype=np.float64), np.array(emph, dtype=np.float64)
        row: dict[str, Any] = {"guidance": w, "spearman": spearman(cls_a, emph_a)}
        inside = 0
        for c in classes:
            m = float(np.nanmean(emph_a[cls_a == c]))
            row[f"class{c}_mean"] = m
            inside += int(real_stats[c]["q1"] <= m <= real_stats[c]["q3"])
        row["classes_in_real_iqr"] = f"{inside}/{len(classes)}"
        rows.append(row)
    rows.append({"guidance": None, "spearman": spearman(real_labels[real_labels >= 0].astype(np.float64),
                                                        real_emph[real_labels >= 0]),
                 **{f"class{c}_mean": real_stats[c]["mean"] for c in classes}, "classes_in_real_iqr": "real"})

    columns = ("guidance", "spearman", *[f"class{c}_mean" for c in classes], "classes_in_real_iqr")
    iqr = "; ".join(f"class {c}: {real_stats[c]['q1']:.2f}-{real_stats[c]['q3']:.2f} (n {real_stats[c]['n']})"
                    for c in classes)
    notes = [
        f"{family} trained {checkpoint_iteration(run_dir)} iterations on the {size}³ phantoms with classes from "
        f"column {LABEL_COLUMN!r}" + (f" (budget {args.minutes:g} min)" if args.minutes else "")
        + (f", on an autoencoder trained {checkpoint_iteration(autoencoder)} iterations (half the budget)"
           if autoencoder is not None else "") + ".",
        f"{args.per_class} volumes per class and weight, {STEPS} DDIM steps; the same seeds for every weight and class.",
        "spearman: between requested class and measured emphysema % (LAA-950 of the lung) over all volumes of a weight; "
        "the last row is the real training set (its classes against its own emphysema %).",
        "guidance 0 is the unconditional model (all classes alike), 1 the conditional model, > 1 a stronger class.",
        f"Real interquartile ranges of emphysema %: {iqr}.",
    ]
    out.write_table(rows, columns, title="Classifier-free guidance: requested class vs measured emphysema", notes=notes)
    write_csv(out.path("guidance-volumes.csv"), volume_rows, ("guidance", "class", "index", "emphysema_pct"))
    return {"rows": rows, "real": real_stats, "run": str(run_dir)}
