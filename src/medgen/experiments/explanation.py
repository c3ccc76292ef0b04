"""``medgen experiment explanation``: counterfactual explanations of an atrophy classifier, against each subject's true healthy self.

1. Data: brain-MRI phantoms at the scale's small size (32³ at demo): a training set (the scale's number of
   training subjects) and a held-out set of other seeds written with ``--healthy``: every subject also as its
   healthy self — the same subject and scan at atrophy 0 (``healthy``, ``healthy_tissue``), so the true
   effect of the disease on the image is ``x − healthy`` and the voxels it changed are those whose tissue
   label differs (``tissue ≠ healthy_tissue``: thinned cortex, enlarged ventricles).
2. Models: a ``classifier`` of the atrophy class (``label``, 0–3) trained on the training set, the model
   being explained; for the latent method a VAE (``autoencoder --recipe vae``) trained on the same volumes,
   whose class direction (mean code of class 0 minus the other classes') comes from the training set's codes.
3. Explained subjects: the held-out subjects of true class ≥ 2 (atrophy ≥ 0.5; up to ``--subjects``), each
   towards class 0 ("normal") with ``medgen explain``'s methods (:mod:`medgen.inference.explain`):
   ``deformation`` (adversarial deformation field), ``robust`` (the same as an expectation over noisy, shifted
   copies: ``--samples 8 --noise 0.3 --shift 2``), ``latent`` (VAE latent editing) and ``saliency``.

Scores per method, mean over the subjects: ``reached_pct`` (the counterfactual's most probable class is 0),
``p_normal`` (its probability of class 0); ``change_auroc``: how well the map (|log J|, |Δ|, the saliency)
ranks the voxels the disease changed above the others inside the brain (0.5: no better than chance);
``closer_to_truth``: ‖counterfactual − healthy‖ / ‖input − healthy‖ inside the brain (< 1: the counterfactual
moved towards the subject's true healthy self; 1: no change); for the deformations ``ventricle_recovered``, the
share of the subject's excess ventricle volume (over its healthy self) that the deformation removes from its
tissue map (1: all of it; 0: none; < 0: the ventricles grew), ``log_jacobian_ventricles`` (its mean over the
subject's ventricles, > 0: they shrink) and ``folding_pct``; and seconds per subject (one CPU thread).

Writes ``explanation.csv``/``.md``, ``explanation-subjects.csv`` (every subject and method) and
``explanation.png`` (one subject: input, its healthy self, the true difference, and each method's
counterfactual, difference and map).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.core.errors import UsageError
from medgen.experiments.workspace import ExperimentOutput, Workspace, checkpoint_iteration, phantom_dataset

HELP = "counterfactual explanations of an atrophy classifier (deformation, latent, saliency) against the true healthy self"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
KIND = "brain-mri"
METHODS: dict[str, str] = {
    "deformation": "adversarial deformation",
    "robust": "adversarial deformation, robust (8 noisy shifted copies)",
    "latent": "latent editing (VAE)",
    "saliency": "gradient saliency",
}
DEFAULT_METHODS = ",".join(METHODS)
TARGET = 0
MIN_CLASS = 2
#: Subjects explained and classifier iterations per scale (``--subjects``, ``--iters`` override them).
SUBJECTS = {"smoke": 2, "demo": 12, "full": 64}
CLASSIFIER_ITERS = {"smoke": 2, "demo": 600, "full": 5000}
VAE_MINUTES = {"smoke": 0.05, "demo": 3.0, "full": 60.0}
#: Most optimisation steps of the deformation (medgen explain's default but at smoke scale, whose numbers mean nothing).
DEFORMATION_STEPS = {"smoke": 10}
#: The robust deformation's expectation over transformations (medgen explain --samples 8 --noise 0.3 --shift 2).
ROBUST = {"samples": 8, "noise": 0.3, "shift": 2}
CLASSIFIER_BATCH = 8
CLASSIFIER_PRESET = "small"  # width 16: the tiny preset's width 4 is too weak a model to be worth explaining
MIN_TRAIN = 16
VENTRICLES = 4  # the ventricles' class in the brain phantoms' tissue map
COLUMNS = ("method", "subjects", "reached_pct", "p_normal", "change_auroc", "change_auroc_sd", "closer_to_truth",
           "ventricle_recovered", "log_jacobian_ventricles", "folding_pct", "seconds")
SUBJECT_COLUMNS = ("id", "label", "atrophy", "method", "p_normal_before", "p_normal", "reached", "change_auroc",
                   "closer_to_truth", "ventricle_recovered", "log_jacobian_ventricles", "folding_pct", "seconds")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", default=DEFAULT_METHODS, metavar="M,M",
                   help=f"methods, of {', '.join(METHODS)} (default all)")
    p.add_argument("--subjects", type=int, default=None, metavar="N",
                   help="held-out subjects of class ≥ 2 to explain (default: 12 at demo scale, 2 smoke, 64 full)")


def _methods(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METHODS]
    if not names or unknown:
        raise UsageError(f"--methods {text!r}: choose from {', '.join(METHODS)}")
    return names


# ----------------------------------------------------------------------------- scores


def ventricle_ml(tissue: np.ndarray, voxel_ml: float) -> float:
    return float(np.count_nonzero(np.asarray(tissue) == VENTRICLES)) * voxel_ml


def score(exp: Any, x: np.ndarray, tissue: np.ndarray, healthy: np.ndarray, healthy_tissue: np.ndarray,
          voxel_ml: float) -> dict[str, Any]:
    """The per-subject scores of the module docstring for one explanation ``exp`` of ``x``."""
    from medgen.inference.register import warp
    from medgen.metrics.registration import folding_fraction
    from medgen.metrics.scores import auroc

    brain = (tissue > 0) | (healthy_tissue > 0)
    changed = (tissue != healthy_tissue)[brain]
    amap = np.abs(np.asarray(exp.map, dtype=np.float64))[brain]
    row: dict[str, Any] = {
        "p_normal_before": float(exp.probs_before[TARGET]),
        "change_auroc": auroc(amap, changed) if 0 < changed.sum() < changed.size else None,
        "seconds": exp.info.get("runtime_s"),
    }
    if exp.image is not None:
        truth = np.linalg.norm((x - healthy)[brain])
        row.update(p_normal=float(exp.probs_after[TARGET]), reached=bool(exp.reached),
                   closer_to_truth=float(np.linalg.norm((exp.image - healthy)[brain]) / truth) if truth > 0 else None)
    if exp.displacement is not None:
        warped = warp(np.asarray(tissue, dtype=np.int16), exp.displacement, "nearest")
        excess = ventricle_ml(tissue, voxel_ml) - ventricle_ml(healthy_tissue, voxel_ml)
        removed = ventricle_ml(tissue, voxel_ml) - ventricle_ml(warped, voxel_ml)
        vent = tissue == VENTRICLES
        row.update(ventricle_recovered=removed / excess if excess > 0 else None,
                   log_jacobian_ventricles=float(np.mean(exp.map[vent])) if vent.any() else None,
                   folding_pct=100.0 * folding_fraction(exp.jacobian))
    return row


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    v = [float(r[key]) for r in rows if r.get(key) is not None]
    return float(np.mean(v)) if v else None


def summarise(method: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    auc = [float(r["change_auroc"]) for r in rows if r.get("change_auroc") is not None]
    reached = [bool(r["reached"]) for r in rows if r.get("reached") is not None]
    return {"method": method, "subjects": len(rows),
            "reached_pct": 100.0 * float(np.mean(reached)) if reached else None,
            "p_normal": _mean(rows, "p_normal"),
            "change_auroc": float(np.mean(auc)) if auc else None,
            "change_auroc_sd": float(np.std(auc, ddof=1)) if len(auc) > 1 else None,
            **{k: _mean(rows, k) for k in ("closer_to_truth", "ventricle_recovered", "log_jacobian_ventricles",
                                           "folding_pct", "seconds")}}


# ----------------------------------------------------------------------------- figure


def save_figure(path: Path, sid: str, x: np.ndarray, healthy: np.ndarray, tissue: np.ndarray,
                explanations: dict[str, Any], title: str) -> Path:
    """One axial slice (the one with the most ventricle voxels): row 1 input | healthy self | true difference;
    one row per method: counterfactual | its difference | its map (saliency: the map only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.core.fileio import atomic_path

    z = int(np.argmax((np.asarray(tissue) == VENTRICLES).sum(axis=(0, 1))))
    rows = 1 + len(explanations)
    fig, axes = plt.subplots(rows, 3, figsize=(6.0, 2.0 * rows), squeeze=False)
    true_diff = healthy - x
    dmax = max(float(np.percentile(np.abs(true_diff), 99.5)), 1e-3)

    def show(ax, vol, label, **style):
        ax.imshow(np.asarray(vol, dtype=np.float32)[:, :, z].T, origin="lower", interpolation="nearest", **style)
        ax.set_title(label, fontsize=7)

    show(axes[0][0], x, f"input {sid}", cmap="gray", vmin=-1, vmax=1)
    show(axes[0][1], healthy, "true healthy self", cmap="gray", vmin=-1, vmax=1)
    show(axes[0][2], true_diff, "true difference", cmap="coolwarm", vmin=-dmax, vmax=dmax)
    for r, (name, exp) in enumerate(explanations.items(), start=1):
        m = np.asarray(exp.map, dtype=np.float32)
        mmax = max(float(np.percentile(np.abs(m), 99.5)), 1e-6)
        if exp.image is not None:
            show(axes[r][0], exp.image, f"{name}: p(normal) {exp.probs_after[TARGET]:.2f}", cmap="gray", vmin=-1, vmax=1)
            show(axes[r][1], exp.image - x, f"{name}: difference", cmap="coolwarm", vmin=-dmax, vmax=dmax)
        else:
            axes[r][0].axis("off")
            axes[r][1].axis("off")
        style = dict(cmap="hot", vmin=0, vmax=mmax) if name == "saliency" else dict(cmap="coolwarm", vmin=-mmax,
                                                                                     vmax=mmax)
        label = {"deformation": "log Jacobian (red: shrinks)", "robust": "log Jacobian (red: shrinks)",
                 "latent": "decoder change Δ"}.get(name, "saliency")
        show(axes[r][2], m, f"{name}: {label}", **style)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the experiment


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from medgen.core.tables import write_csv
    from medgen.data.dataset import VolumeDataset, load_manifest
    from medgen.experiments.synthesis import budget_iterations, training_minutes
    from medgen.families import registry
    from medgen.inference import explain

    methods = _methods(args.methods)
    s = ws.scale
    n_subjects = SUBJECTS.get(s.name, 12) if args.subjects is None else args.subjects
    if n_subjects < 1:
        raise UsageError(f"--subjects {args.subjects}: need at least 1")
    if not ws.uses_phantoms:
        raise UsageError("the explanation experiment scores against the brain phantoms' true healthy selves; it runs "
                         "on the built-in phantoms only (explain your own scans with `medgen explain CLASSIFIER SCAN "
                         "--out DIR`)")
    size = s.small_size
    # at least MIN_TRAIN subjects, so that every class (the class direction needs class 0) is in the training set
    train_dir = phantom_dataset(ws, KIND, f"explanation-train-{size}", max(s.n_train, MIN_TRAIN), size, ws.seed + 700)
    test_dir = phantom_dataset(ws, KIND, f"explanation-heldout-{size}", max(s.n_heldout, 2 * n_subjects), size,
                               ws.seed + 701, healthy=True)
    clf_iters = ws.iters or CLASSIFIER_ITERS.get(s.name, s.classifier_iters)
    runs = {"classifier": ws.model(f"explanation-classifier-{size}-{CLASSIFIER_PRESET}-{clf_iters}it", size,
                                   family="classifier", preset=CLASSIFIER_PRESET, data=train_dir,
                                   label_column="label", iters=clf_iters,
                                   hparams={"batch": CLASSIFIER_BATCH})}
    if "latent" in methods:
        minutes = VAE_MINUTES.get(s.name, 3.0)
        name = f"explanation-vae-{size}-{minutes:g}min"
        iters = budget_iterations(ws, "autoencoder", name, size, minutes)
        runs["vae"] = ws.model(name, size, family="autoencoder", recipe="vae", data=train_dir, iters=iters)

    device = torch.device("cpu")
    clf = registry.load(runs["classifier"], device=device)
    logits = explain.classifier_logits(clf.network, clf.config.size)
    encode = decode = direction = None
    if "latent" in methods:
        vae = registry.load(runs["vae"], device=device)
        encode, decode = explain.encoder_decoder(vae, what=str(runs["vae"]))
        codes, labels = explain.dataset_codes(encode, train_dir, "label", progress=ws.progress)
        direction = explain.class_direction(codes, labels, TARGET)

    rows_by_id = {r["id"]: r for r in load_manifest(test_dir)}
    ds = VolumeDataset(test_dir, split="all", label_column="label", keys=("image", "tissue", "healthy",
                                                                          "healthy_tissue"))
    chosen = sorted((i for i in range(len(ds)) if int(rows_by_id[ds.ids[i]]["label"]) >= MIN_CLASS),
                    key=lambda i: -float(rows_by_id[ds.ids[i]]["atrophy"]))[:n_subjects]
    if not chosen:
        raise UsageError(f"{test_dir}: no held-out subject of class ≥ {MIN_CLASS}; raise --subjects or the scale")
    spacing = float(str(rows_by_id[ds.ids[chosen[0]]]["spacing"]).split("x")[0])
    voxel_ml = spacing**3 / 1000.0

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    per_subject: list[dict[str, Any]] = []
    figure: dict[str, Any] = {}
    try:
        for k, i in enumerate(chosen):
            item = ds[i]
            sid = ds.ids[i]
            x, tissue = item["image"][0].numpy().astype(np.float32), item["tissue"][0].numpy().astype(np.int16)
            healthy = item["healthy"][0].numpy().astype(np.float32)
            healthy_tissue = item["healthy_tissue"][0].numpy().astype(np.int16)
            for m in methods:
                t0 = time.perf_counter()
                if m == "deformation":
                    exp = explain.deformation_counterfactual(logits, x, TARGET,
                                                             steps=DEFORMATION_STEPS.get(s.name, 200))
                elif m == "robust":
                    exp = explain.deformation_counterfactual(logits, x, TARGET,
                                                             steps=DEFORMATION_STEPS.get(s.name, 200), **ROBUST)
                elif m == "latent":
                    exp = explain.latent_counterfactual(logits, encode, decode, x, direction, TARGET)
                else:
                    exp = explain.saliency_map(logits, x, TARGET)
                exp.info["runtime_s"] = time.perf_counter() - t0
                row = score(exp, x, tissue, healthy, healthy_tissue, voxel_ml)
                per_subject.append({"id": sid, "label": int(rows_by_id[sid]["label"]),
                                    "atrophy": float(rows_by_id[sid]["atrophy"]), "method": METHODS[m], **row})
                if k == 0:
                    figure[m] = exp
            print(f"explanation: {sid} (class {rows_by_id[sid]['label']}): "
                  + ", ".join(f"{r['method']} AUROC {r['change_auroc']:.2f}" for r in per_subject[-len(methods):]
                              if r.get("change_auroc") is not None), flush=True)
    finally:
        torch.set_num_threads(threads)

    rows = [summarise(METHODS[m], [r for r in per_subject if r["method"] == METHODS[m]]) for m in methods]
    for r in rows:
        print(f"explanation: {r['method']}: change AUROC {r['change_auroc']:.3f}"
              + (f", reached {r['reached_pct']:.0f} %, closer_to_truth {r['closer_to_truth']:.3f}"
                 if r.get("reached_pct") is not None else ""), flush=True)
    write_csv(out.path("explanation-subjects.csv"), per_subject, SUBJECT_COLUMNS)
    clf_acc = _heldout_accuracy(clf, test_dir)
    notes = [
        f"Data: brain-MRI phantoms at {size}³ ({200 / size:g} mm voxels, preprocessed to [-1, 1]): "
        f"{len(load_manifest(train_dir))} training subjects and {len(rows_by_id)} held-out subjects of other seeds "
        f"written with --healthy; explained: the {len(chosen)} held-out subjects of true class ≥ {MIN_CLASS} with the "
        "most atrophy, each towards class 0.",
        f"Classifier (the model explained): `medgen train --family classifier --preset {CLASSIFIER_PRESET} "
        f"--label-column label`, {checkpoint_iteration(runs['classifier'])} iterations, batch {CLASSIFIER_BATCH}; on the held-out set "
        f"accuracy {clf_acc['accuracy']:.2f} over the 4 atrophy classes (chance 0.25), within one class "
        f"{clf_acc['within_one']:.2f}. An explanation shows what the classifier uses, which may differ from "
        "the disease.",
        "deformation: medgen explain's defaults (Adam ≤ 200 steps, lr 0.05, bending energy 1, magnitude 0.01, "
        "control points every 4 voxels, 7 scaling-and-squaring steps, stop at p(class 0) ≥ 0.9); robust: the "
        f"same with the loss averaged over {ROBUST['samples']} copies of the counterfactual with Gaussian noise "
        f"σ {ROBUST['noise']:g} and random circular shifts of up to {ROBUST['shift']} voxels per axis (stop when "
        "their mean p(class 0) ≥ 0.9; p_normal and reached_pct are of the clean counterfactual).",
        ("latent: VAE (`--family autoencoder --recipe vae`, "
         f"{checkpoint_iteration(runs['vae'])} iterations, {training_minutes(runs['vae']) or 0:.1f} min) on the "
         "training set; class direction = mean μ of the training volumes of class 0 − mean μ of the others; "
         f"α the smallest of {', '.join(f'{a:g}' for a in explain.DEFAULT_ALPHAS)} at which class 0 is the most "
         "probable; counterfactual = input + D(z + αd) − D(z).") if "latent" in methods else "",
        "saliency: |∂ log p(class 0) / ∂x|, Gaussian σ 1 voxel; a map without a counterfactual.",
        "change_auroc: the AUROC of |map| inside the brain (tissue > 0 in the subject or its healthy self) "
        "against the voxels whose tissue label atrophy changed; mean over subjects (sd: ddof 1). 0.5 is chance.",
        "closer_to_truth: ‖cf − healthy‖ / ‖x − healthy‖ over the brain (1: as far from the truth as the input).",
        "ventricle_recovered: (V(x) − V(tissue warped by u)) / (V(x) − V(healthy)) of the ventricle volumes in the "
        "tissue maps (nearest neighbour): 1 when the deformation removes exactly the disease's ventricle "
        "enlargement. log_jacobian_ventricles > 0: the ventricles shrink in the counterfactual.",
        "seconds: wall time per subject on one CPU thread (shared machine: an upper bound).",
    ]
    out.write_table(rows, COLUMNS, title=f"Counterfactual explanations of an atrophy classifier at {size}³",
                    notes=[n for n in notes if n])
    first = chosen[0]
    item = ds[first]
    fig = save_figure(out.path("explanation.png"), ds.ids[first], item["image"][0].numpy(),
                      item["healthy"][0].numpy(), item["tissue"][0].numpy(), figure,
                      f"{ds.ids[first]} (atrophy {float(rows_by_id[ds.ids[first]]['atrophy']):.2f}, class "
                      f"{rows_by_id[ds.ids[first]]['label']}) → class 0")
    out.add_figure(fig)
    return {"size": size, "methods": methods, "subjects": [ds.ids[i] for i in chosen],
            "classifier": clf_acc, "runs": {k: str(v) for k, v in runs.items()}, "rows": rows,
            "commands": list(ws.log)}


def _heldout_accuracy(clf: Any, folder: Path) -> dict[str, float]:
    """The classifier's accuracy (and share within one class) on every subject of ``folder``."""
    from medgen.data.dataset import VolumeDataset

    ds = VolumeDataset(folder, split="all", label_column="label", keys=("image",))
    vols = [ds[i]["image"][0].numpy() for i in range(len(ds))]
    y = np.asarray(ds.labels, dtype=int)
    pred = np.argmax(clf.predict_proba(vols), axis=1)
    return {"accuracy": float(np.mean(pred == y)), "within_one": float(np.mean(np.abs(pred - y) <= 1)),
            "n": int(len(y))}

