"""``medgen experiment progression``: predicting a follow-up brain MRI from the baseline and the interval.

1. Data: longitudinal brain-MRI phantoms (``medgen phantoms --kind brain-mri --longitudinal``: each subject's
   baseline ``image`` and its ``followup`` 1-5 years later, the ventricles grown and the brain atrophied, with
   both tissue maps and the true volumes), at the scale's small size and preprocessed: a training set (the
   scale's training count) and a held-out set of other seeds (the scale's held-out count). With ``--data`` and
   ``--heldout``: your own preprocessed longitudinal sets (a ``followup`` volume, an ``interval_years`` column;
   the ventricle scores need a ``tissue`` volume and a ``ventricle_volume_ml_followup`` column).
2. Methods: ``no change`` (the follow-up is the baseline), ``linear population trend`` (the baseline plus the
   interval times the training pairs' mean per-year voxel change), and the ``progression`` family trained on
   the training pairs (``--models``, default all three): ``intensity`` (a voxel-wise change per year),
   ``deformation`` (``--recipe deformation``: the baseline warped by a predicted displacement per year) and
   ``dep-gan`` (``--recipe dep-gan``: the intensity model with DEP-GAN's adversarial term), each for ``--iters``
   iterations (default at demo scale: a few CPU minutes each; otherwise the scale's).
3. Scores on every held-out subject (:func:`medgen.families.progression.evaluate.evaluate`): L1, PSNR and SSIM
   against the true follow-up, L1 of the change on the voxels that truly changed, and the lateral ventricles'
   volume measured on the prediction against the true follow-up volume (:mod:`medgen.metrics.longitudinal`);
   the same measurement on the true follow-up is the floor a perfect prediction would reach.

Writes ``progression.csv``/``.md``: per method the mean and standard deviation over held-out subjects of
every score; ``progression-subjects.csv``: every subject and method; ``progression.png``: one held-out
subject (the largest true ventricle growth), baseline, true follow-up and each method's prediction, with
the true change and each |prediction − truth| below, axial slice through the ventricles. The target (reported,
not tuned to): every trained model's mean absolute ventricle-volume error below that of ``no change``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medgen.core.errors import UsageError
from medgen.experiments.workspace import ExperimentOutput, Workspace, checkpoint_iteration, phantom_dataset

HELP = "disease progression: follow-up brain MRI predicted from the baseline and the interval, against no change"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
#: The trained variants: option name → (table label, ``medgen train --recipe``).
MODELS: dict[str, tuple[str, str | None]] = {
    "intensity": ("progression (intensity)", None),
    "deformation": ("progression (deformation)", "deformation"),
    "dep-gan": ("DEP-GAN-like (adversarial)", "dep-gan"),
}
BASELINES: dict[str, str] = {"no change": "no change", "linear trend": "linear population trend"}
FLOOR = "true follow-up (measurement floor)"
#: Training iterations of every model by scale when --iters is not given (demo: a few CPU minutes each at 32³;
#: the others: the scale's).
DEMO_ITERS = 600
SCORES = ("l1", "psnr", "ssim", "l1_change", "ventricle_error_ml", "ventricle_abs_error_ml")
COLUMNS = ("method", "iterations", "train_minutes", "n",
           *[c for s in SCORES for c in (s, f"{s}_sd")], "better_than_no_change")
DEFAULTS = {"models": ",".join(MODELS)}
TISSUE = "tissue"
VENTRICLE_LABEL = 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(MODELS), metavar="M,M",
                   help=f"progression variants to train and score, besides the no-change and linear-trend baselines "
                        f"(default {','.join(MODELS)})")


def model_names(text: str) -> list[str]:
    """The ``--models`` list (order kept, duplicates dropped); UsageError for an unknown or empty one."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise UsageError(f"--models {text!r}: choose from {', '.join(MODELS)}")
    return names


def train_iterations(ws: Workspace) -> int:
    """``--iters`` when given, else :data:`DEMO_ITERS` at demo scale and the scale's iterations otherwise."""
    if ws.iters:
        return ws.iters
    return DEMO_ITERS if ws.scale.name == "demo" else ws.scale.iters


def mean_sd(values: Sequence[Any]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1) of the finite values; None where there are none (sd: fewer
    than two)."""
    v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    mean = float(v.mean()) if v.size else None
    sd = float(v.std(ddof=1)) if v.size > 1 else None
    return mean, sd


def summarise(rows: Sequence[Mapping[str, Any]], method: str) -> dict[str, Any]:
    """One table row: ``method``'s per-subject ``rows`` (those of :func:`evaluate`) reduced to the mean and
    sd of every score, with ``ventricle_abs_error_ml`` the absolute ventricle error. ``method`` :data:`FLOOR`:
    the ventricle error measured on the true follow-up (``ventricle_error_ml_floor``, the same in every
    method's rows: the no-change rows are used), no image scores."""
    if method == FLOOR:
        mine = [{"ventricle_error_ml": r["ventricle_error_ml_floor"]} for r in rows
                if r["method"] == "no change" and "ventricle_error_ml_floor" in r]
    else:
        mine = [dict(r) for r in rows if r["method"] == method]
    for r in mine:
        if r.get("ventricle_error_ml") is not None:
            r["ventricle_abs_error_ml"] = abs(float(r["ventricle_error_ml"]))
    out: dict[str, Any] = {"method": method, "n": len(mine)}
    for s in SCORES:
        out[s], out[f"{s}_sd"] = mean_sd([r.get(s) for r in mine])
    return out


def better_than(rows: Sequence[Mapping[str, Any]], method: str, reference: str = "no change") -> str | None:
    """``"k/n"``: of the ``n`` subjects with a ventricle error for both ``method`` and ``reference``, the ``k``
    whose absolute error is smaller with ``method`` (None for the reference itself or without such subjects)."""
    if method == reference:
        return None
    ref = {r["id"]: r.get("ventricle_error_ml") for r in rows if r["method"] == reference}
    pairs = [(abs(float(r["ventricle_error_ml"])), abs(float(ref[r["id"]]))) for r in rows
             if r["method"] == method and r.get("ventricle_error_ml") is not None and ref.get(r["id"]) is not None]
    return f"{sum(a < b for a, b in pairs)}/{len(pairs)}" if pairs else None


def target_met(table: Sequence[Mapping[str, Any]], trained: Sequence[str]) -> dict[str, bool | None]:
    """Per trained method (table label): whether its mean absolute ventricle-volume error is below that of
    ``no change`` (None when either was not measured)."""
    by = {r["method"]: r for r in table}
    ref = by.get("no change", {}).get("ventricle_abs_error_ml")
    out: dict[str, bool | None] = {}
    for m in trained:
        mine = by.get(m, {}).get("ventricle_abs_error_ml")
        out[m] = None if ref is None or mine is None else bool(mine < ref)
    return out


def largest_growth(manifest: Sequence[Mapping[str, str]]) -> str:
    """The id of the subject whose true ventricle volume grows most (``ventricle_volume_ml_followup`` −
    ``ventricle_volume_ml``); the first subject when the manifest lacks those columns."""
    best, best_id = -math.inf, manifest[0]["id"]
    for r in manifest:
        try:
            growth = float(r["ventricle_volume_ml_followup"]) - float(r["ventricle_volume_ml"])
        except (KeyError, TypeError, ValueError):
            continue
        if growth > best:
            best, best_id = growth, r["id"]
    return best_id


def ventricle_slice(tissue: np.ndarray | None, shape: Sequence[int], label: int = VENTRICLE_LABEL) -> int:
    """The index along the last axis with the most ``label`` voxels (the middle one without a tissue map or
    without such a voxel)."""
    if tissue is None:
        return int(shape[-1]) // 2
    counts = (np.asarray(tissue) == label).sum(axis=(0, 1))
    return int(np.argmax(counts)) if counts.max() > 0 else int(shape[-1]) // 2


def save_figure(path: Path, sid: str, baseline: np.ndarray, followup: np.ndarray, tissue: np.ndarray | None,
                interval: float, predictions: Mapping[str, np.ndarray]) -> Path:
    """Top: baseline, true follow-up, each prediction; bottom: the true change |follow-up − baseline| under the
    follow-up and |prediction − truth| under each prediction; axial slice through the ventricles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.core.fileio import atomic_path

    z = ventricle_slice(tissue, baseline.shape)
    diffs = {m: np.abs(p - followup) for m, p in predictions.items()}
    true_change = np.abs(followup - baseline)
    vmax = max(float(np.percentile(np.stack([true_change, *diffs.values()]), 99.9)), 1e-3)
    cols = 2 + len(predictions)
    fig, axes = plt.subplots(2, cols, figsize=(2.0 * cols, 5.0), squeeze=False)
    top = [("baseline", baseline), (f"true follow-up (+{interval:.1f} y)", followup), *predictions.items()]
    bottom = [None, ("|follow-up − baseline|", true_change), *[("|prediction − truth|", d) for d in diffs.values()]]
    for c, (title, vol) in enumerate(top):
        axes[0][c].imshow(vol[:, :, z].T, cmap="gray", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
        axes[0][c].set_title(title, fontsize=7)
    for c, item in enumerate(bottom):
        if item is None:
            axes[1][c].axis("off")
            continue
        axes[1][c].imshow(item[1][:, :, z].T, cmap="magma", vmin=0, vmax=vmax, origin="lower",
                          interpolation="nearest")
        axes[1][c].set_title(item[0], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"held-out subject {sid}, axial slice {z} (difference maps 0–{vmax:.2f})", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.core.device import resolve_device
    from medgen.core.tables import write_csv
    from medgen.data.dataset import VolumeDataset, load_manifest, load_preprocess_info, volume_kinds
    from medgen.experiments.synthesis import training_minutes
    from medgen.families import registry
    from medgen.families.progression.baselines import LinearTrend
    from medgen.families.progression.evaluate import evaluate

    models = model_names(args.models)
    iters = train_iterations(ws)
    s = ws.scale
    if ws.uses_phantoms:
        size = s.small_size
        train_dir = phantom_dataset(ws, "brain-mri", f"brain-longitudinal-train-{size}", s.n_train, size,
                                    ws.seed + 200, longitudinal=True)
        heldout_dir = phantom_dataset(ws, "brain-mri", f"brain-longitudinal-heldout-{size}", s.n_heldout, size,
                                      ws.seed + 201, longitudinal=True)
    else:
        size = ws.main_size
        train_dir, heldout_dir = ws.datasets(size)
    for folder in (train_dir, heldout_dir):
        if "followup" not in volume_kinds(load_preprocess_info(folder)):
            raise UsageError(f"{folder}: no 'followup' volume: the progression experiment needs longitudinal pairs "
                             "(medgen phantoms --kind brain-mri --longitudinal, or a manifest column 'followup')")

    runs: dict[str, Path] = {}
    for m in models:
        label, recipe = MODELS[m]
        runs[m] = ws.model(f"progression-{m}-{size}-{iters}it", size, family="progression", recipe=recipe,
                           iters=iters, data=train_dir)
    device = resolve_device(ws.device)
    loaded = {MODELS[m][0]: registry.load(runs[m], device=device) for m in models}
    trend = LinearTrend.from_dataset(train_dir, split="all")
    print(f"\nscoring {', '.join(['no change', 'linear trend', *loaded])} on {heldout_dir}", flush=True)
    result = evaluate(heldout_dir, loaded, split="all", trend=trend)
    for r in result.rows:  # the table's names
        r["method"] = BASELINES.get(r["method"], r["method"])
    rows = [summarise(result.rows, m) for m in (*BASELINES.values(), *loaded, FLOOR)]
    for r in rows:
        m = next((k for k in models if MODELS[k][0] == r["method"]), None)
        r["iterations"] = checkpoint_iteration(runs[m]) if m else None
        r["train_minutes"] = training_minutes(runs[m]) if m else None
        r["better_than_no_change"] = None if r["method"] == FLOOR else better_than(result.rows, r["method"])
    trained = [MODELS[m][0] for m in models]
    met = target_met(rows, trained)
    for m, ok in met.items():
        print(f"progression: {m} {'beats' if ok else 'does not beat' if ok is not None else 'not compared with'} "
              "no change on the mean absolute ventricle-volume error", flush=True)

    subject_columns = list(dict.fromkeys(k for r in result.rows for k in r))
    write_csv(out.path("progression-subjects.csv"), result.rows, subject_columns)
    source = "longitudinal brain-MRI phantoms" if ws.uses_phantoms else "your longitudinal data sets"
    notes = [
        f"Data: {source} at {size}³ ({load_preprocess_info(train_dir).get('modality', 'mri')}, intensities "
        f"in [-1, 1]): {len(load_manifest(train_dir))} training pairs ({train_dir.name}) and "
        f"{len(load_manifest(heldout_dir))} held-out pairs of other seeds ({heldout_dir.name}); every score is the "
        "mean (sd: sample standard deviation, ddof 1) over the held-out subjects.",
        f"linear population trend: baseline + interval × the mean per-year voxel change of the {trend.n_pairs} "
        "training pairs (no registration between subjects).",
        f"Trained models: `medgen train --family progression` on the training pairs, preset "
        f"{'tiny' if s.preset == 'tiny' else 'small'}, batch {s.batch}, {iters} iterations each (train_minutes: "
        "time in training iterations on this machine); intensity: a voxel-wise change per year; deformation "
        "(--recipe deformation): a displacement per year warping the baseline, bending-energy weight 1; DEP-GAN-like "
        "(--recipe dep-gan): intensity with a PatchGAN term of weight 0.01.",
        "l1, psnr, ssim: the prediction against the true follow-up (data range 2); l1_change: mean absolute error "
        "of the predicted change on the voxels whose true change exceeds 0.1 (whole-volume scores are dominated by "
        "unchanged voxels and scan noise).",
        "ventricle_error_ml: lateral-ventricle volume measured on the prediction minus the true follow-up volume "
        "(the phantom's, from its tissue fractions); ventricle_abs_error_ml: its absolute value. The measurement "
        "(medgen.metrics.longitudinal: region and intensity levels calibrated on the baseline and its tissue map, "
        "voxels past the CSF/tissue midpoint counted) is the same on every prediction and on the true follow-up; "
        f"the '{FLOOR}' row is that measurement on the true follow-up: what a perfect prediction would score. "
        "better_than_no_change: the held-out subjects whose absolute ventricle error is below no change's (paired).",
        "Target (reported, not tuned to): every trained model's mean ventricle_abs_error_ml below no change's: "
        + "; ".join(f"{m}: {'met' if ok else 'not met' if ok is not None else 'not measured'}"
                    for m, ok in met.items()) + ".",
        *result.notes[:5],
        "Per subject and method: progression-subjects.csv.",
    ]
    out.write_table(rows, COLUMNS, title=f"Follow-up prediction on held-out longitudinal brain MRI at {size}³",
                    notes=notes)

    # ---- the figure: the held-out subject with the largest true ventricle growth
    sid = largest_growth(load_manifest(heldout_dir))
    keys = ("image", "followup") + ((TISSUE,) if TISSUE in volume_kinds(load_preprocess_info(heldout_dir)) else ())
    item = VolumeDataset(heldout_dir, split="all", label_column=None, keys=keys, ids=[sid],
                         covariate_columns=("interval_years",))[0]
    x, y = item["image"][0].numpy(), item["followup"][0].numpy()
    t = float(item["covariates"][0])
    from medgen.families.progression.baselines import NoChange

    predictors = {"no change": NoChange(), "linear population trend": trend, **loaded}
    predictions = {m: np.asarray(p.predict(x, t), dtype=np.float32) for m, p in predictors.items()}
    out.add_figure(save_figure(out.path("progression.png"), sid, x, y,
                               item[TISSUE][0].numpy() if TISSUE in item else None, t, predictions))
    return {"size": size, "iters": iters, "models": models, "runs": {m: str(p) for m, p in runs.items()},
            "train": str(train_dir), "heldout": str(heldout_dir), "rows": rows, "target_met": met,
            "figure_subject": sid}
