"""``medgen experiment anomaly``: which model of normal anatomy finds which lesions, measured to the voxel.

1. Normal training data: the workspace's thorax-CT training phantoms, which have no lesions (``medgen
   phantoms --normal`` writes the same volumes), at the scale's small size.
2. Test sets, one per lesion kind (``--lesions``, default nodule, emphysema, mass): held-out phantoms of
   other seeds (``--test-volumes`` of them, default the scale's held-out count), rendered at the training
   phantoms' size and preprocessed like them, half of them with lesions of that kind painted in (``medgen
   phantoms --lesions KIND``), each with its lesion instance map.
3. Detectors (``--detectors``), each trained on the normal volumes only, ``--minutes`` of training each at
   its measured speed (the families experiment's budget, so its runs are shared):

   * ``fanogan``: f-AnoGAN's izi_f encoder (image + discriminator-feature residual) on the HA-GAN run,
     starting from HA-GAN's own encoder, for the scale's iterations;
   * ``hagan``: HA-GAN's own encoder and generator, G(E(x)), before the f-AnoGAN training;
   * ``ae`` / ``vae``: the ``autoencoder`` family, plain (spatial bottleneck) and variational (its AE's
     budget);
   * ``ddpm``: the image-space diffusion model, each volume noised to a quarter of the forward process and
     denoised back (AnoDDPM), 13 DDIM steps;
   * ``inpaint``: mask-and-inpaint, a ``unet`` of the ``inpaint`` task trained on the normal volumes with
     random boxes hidden (``medgen degrade --kind inpaint``, boxes of :data:`INPAINT_BOX_MM` hiding
     :data:`INPAINT_FRACTION` of the body); each volume is cut into a checkerboard of such cubes, each class
     of cubes hidden in turn and inpainted from its context (:meth:`medgen.families.unet.model.
     InpaintingModel.reconstruct`), so a vessel that crosses a cube is predicted and a nodule inside it is
     not. ``--shifts N`` lays the checkerboard N times, moved by box/N voxels each time, and averages the
     reconstructions (N times the scoring time; its maps go to their own folder of the workspace).

4. ``medgen anomaly`` on every test set with every detector: the per-volume scores and voxel maps
   (:mod:`medgen.inference.anomaly`), scored against the ground truth, for the residual map and for the
   normative map standardised by the workspace's held-out normal phantoms (``--reference``), whose blob
   score is ``score_blob_excess`` (the residual's bright blobs above those of the reference volumes).
5. With two detectors or more, their ensemble (``medgen anomaly-ensemble``,
   :mod:`medgen.inference.anomaly_ensemble`): the mean of their blob excess calibrated against the reference.

Writes ``anomaly.csv``/``.md``: per detector and lesion kind, volume-level AUROC and AUPRC of the
detector's score (the mean residual; f-AnoGAN: its own) and AUROC of the 99th percentile of the map,
AUROC restricted to lesions of 10 mm and more, voxel-level AUROC and AUPRC (with the lesion prevalence,
AUPRC's chance level), the best Dice over thresholds, and the share of lesions detected at the threshold
that flags 0.1 % of the normal volumes' voxels, by size; ``anomaly-KIND.png``: one abnormal test volume
per kind, every detector's reconstruction, map and the true lesion, through the largest lesion.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from medgen.core.errors import UsageError
from medgen.experiments.workspace import ExperimentOutput, Workspace, checkpoint_iteration, phantom_dataset

HELP = "anomaly detection: f-AnoGAN, autoencoders and diffusion trained on normal phantoms, scored against known lesions"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
DETECTORS: dict[str, str] = {
    "fanogan": "f-AnoGAN (HA-GAN)",
    "hagan": "HA-GAN encoder",
    "ae": "autoencoder",
    "vae": "VAE",
    "ddpm": "DDPM (AnoDDPM)",
    "inpaint": "mask-and-inpaint (unet)",
}
#: The detector column of the ensemble's rows: every detector run, by the mean of their calibrated blob excess.
ENSEMBLE = "ensemble of the above"
#: The edge of the cubes mask-and-inpaint hides (mm; 4 voxels at 64³, 2 at 32³: at least the size of the lesions
#: to find) and the share of the body its training boxes hide.
INPAINT_BOX_MM = 25.0
INPAINT_FRACTION = 0.125
INPAINT_PATCH = 32
LESION_KINDS = ("nodule", "emphysema", "mass")
DEFAULT_MINUTES = 5.0
LARGE_MM = 10.0
DEFAULTS = {"detectors": ",".join(DETECTORS), "lesions": ",".join(LESION_KINDS), "minutes": DEFAULT_MINUTES,
            "size": None, "test_volumes": None}
COLUMNS = ("lesion", "detector", "map", "iterations", "train_minutes", "abnormal", "auroc", "auprc", "auprc_chance",
           "auroc_p99", "auroc_max", "auroc_10mm", "auroc_brighter", "auroc_lung", "auroc_lung_10mm", "auroc_blob", "auroc_blob_10mm",
           "voxel_auroc", "voxel_auprc", "lesion_voxel_fraction", "best_dice",
           "lesions_detected", "detected_lt10mm", "detected_10_20mm", "detected_ge20mm")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detectors", default=",".join(DETECTORS), metavar="D,D",
                   help=f"detectors (default {','.join(DETECTORS)})")
    p.add_argument("--lesions", default=",".join(LESION_KINDS), metavar="K,K",
                   help=f"thorax-CT lesion kinds, one test set each (default {','.join(LESION_KINDS)})")
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help="edge length of the volumes and detectors (default: the scale's small size, 32 at demo); "
                        "every phantom is rendered at the largest of the scale's sizes and this one (above the "
                        "scale's, the same subjects are rendered again at S)")
    p.add_argument("--test-volumes", type=int, default=None, metavar="N",
                   help="phantoms in each lesion kind's test set, about half of them with lesions (default: the "
                        "scale's held-out count, 32 at demo); with 9 or so large nodules among 32 a volume-level "
                        "AUROC moves by about ±0.08 between test sets")
    p.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, metavar="M",
                   help=f"training budget of each detector at its measured speed (default {DEFAULT_MINUTES:g}; "
                        "f-AnoGAN's encoder: the scale's iterations on top of its HA-GAN)")
    p.add_argument("--shifts", type=int, default=1, metavar="N",
                   help="mask-and-inpaint: placements of its checkerboard, the reconstructions averaged (`medgen "
                        "anomaly --shifts`; N times the scoring time; default 1)")


def _names(text: str, known: tuple[str, ...] | dict[str, str], option: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise UsageError(f"{option} {text!r}: choose from {', '.join(known)}")
    return names


def detector_runs(ws: Workspace, detectors: list[str], size: int, minutes: float) -> dict[str, Path]:
    """The trained run of every detector (trained or reused; :meth:`Workspace.model`)."""
    from medgen.experiments.synthesis import _family_run, budget_iterations, run_name

    runs: dict[str, Path] = {}
    if "fanogan" in detectors or "hagan" in detectors:
        runs["hagan"] = _family_run(ws, "hagan", size, minutes)
    if "fanogan" in detectors:
        runs["fanogan"] = ws.model(f"fanogan-{size}-on-{runs['hagan'].name}", size, family="fanogan",
                                   model_settings={"generator_run": str(runs["hagan"])})
    if "ae" in detectors or "vae" in detectors:
        iters = budget_iterations(ws, "autoencoder", run_name("autoencoder", size, minutes), size, minutes)
        if "ae" in detectors:
            runs["ae"] = ws.model(run_name("autoencoder", size, minutes), size, family="autoencoder", iters=iters)
        if "vae" in detectors:
            runs["vae"] = ws.model(run_name("autoencoder-vae", size, minutes), size, family="autoencoder",
                                   iters=iters, recipe="vae")
    if "ddpm" in detectors:
        runs["ddpm"] = _family_run(ws, "ddpm", size, minutes)
    if "inpaint" in detectors:
        runs["inpaint"] = inpaint_run(ws, size)
    return {d: runs[d] for d in detectors}


def _spacing_mm(ws: Workspace, size: int) -> float:
    """The isotropic voxel (mm) of the workspace's phantoms at ``size``³."""
    from medgen.core.volume import parse_spacing
    from medgen.data.dataset import load_manifest

    return parse_spacing(load_manifest(ws.datasets(size)[0])[0]["spacing"])[0]


def inpaint_box(ws: Workspace, size: int) -> int:
    """The edge in voxels of the cubes mask-and-inpaint hides at ``size``³: :data:`INPAINT_BOX_MM` in the
    phantoms' isotropic voxels, at least 1."""
    return max(1, round(INPAINT_BOX_MM / _spacing_mm(ws, size)))


def inpaint_run(ws: Workspace, size: int) -> Path:
    """The mask-and-inpaint detector: the normal training set with boxes of :func:`inpaint_box` voxels hidden
    (``medgen degrade --kind inpaint``), and a ``unet`` of the ``inpaint`` task trained on it for the scale's
    iterations."""
    from medgen.data.degraded_set import write_degraded_set
    from medgen.experiments.workspace import step

    clean = ws.datasets(size)[0]
    spacing_mm = _spacing_mm(ws, size)
    box = inpaint_box(ws, size)
    settings = ["shape=box", f"size_mm={box * spacing_mm:g}", f"fraction={INPAINT_FRACTION:g}"]
    folder = ws.root / "data" / f"inpaint-boxes{box}-train-{size}"
    argv = ["degrade", str(clean), str(folder), "--kind", "inpaint", *[a for p in settings for a in ("--param", p)],
            "--seed", str(ws.seed)]
    with step(argv, "degrade (inpaint boxes)"):
        write_degraded_set(clean, folder, "inpaint", settings, seed=ws.seed, progress=ws.progress)
    # The unet family has no `medgen bench` to convert minutes into iterations: the scale's iterations.
    # Trained on random patches of INPAINT_PATCH³ (8x fewer voxels per iteration than 64³ volumes), which still
    # hold several boxes and their context; the model inpaints whole volumes by windows of that size.
    return ws.model(f"unet-inpaint-{size}", size, family="unet", data=folder, model_settings={"task": "inpaint"},
                    hparams={"patch": min(INPAINT_PATCH, size)})



def training_note(detectors: list[str], minutes: float) -> str:
    """The table's note on how the detectors that were run (except mask-and-inpaint) were trained."""
    timed = [d for d in detectors if d != "inpaint"]
    if not timed:
        return ""
    parts = [f"{', '.join(DETECTORS[d] for d in timed)} trained on the normal volumes, {minutes:g} minutes each "
             "at their measured speed (iterations, train_minutes from each run's log)"]
    if "fanogan" in detectors:
        parts.append("f-AnoGAN's encoder for the scale's iterations on top of its HA-GAN run")
    if "vae" in detectors:
        parts.append("the VAE with the autoencoder's budget in iterations")
    note = "; ".join(parts) + "."
    return note + (" DDPM: noise level 0.25, 13 DDIM steps." if "ddpm" in detectors else "")


def auroc_subset(rows: list[dict[str, Any]], min_mm: float, column: str = "score") -> float | None:
    """Volume-level AUROC of ``column`` over the normal volumes and the abnormal ones whose largest lesion has
    an equivalent diameter of ``min_mm`` or more (None without both)."""
    from medgen.metrics.scores import auroc

    keep = [r for r in rows if int(r["abnormal"]) == 0 or float(r.get("largest_lesion_mm", 0)) >= min_mm]
    y = [int(r["abnormal"]) for r in keep]
    if len(set(y)) < 2:
        return None
    return auroc([float(r[column]) for r in keep], y)


def table_row(kind: str, detector: str, run: Path, metrics: dict[str, Any], rows: list[dict[str, Any]],
              map_kind: str = "residual") -> dict[str, Any]:
    """One row of the table from ``medgen anomaly``'s metrics and per-volume rows (their ``score`` column the
    volume score of ``map_kind``)."""
    from medgen.experiments.synthesis import training_minutes

    det = metrics.get("detection") or {}
    by_size = {b["bin"]: b for b in det.get("by_size", [])}

    def rate(i: int) -> str | None:
        b = list(by_size.values())[i] if i < len(by_size) else None
        return None if not b or not b["n"] else f"{b['detected']}/{b['n']}"

    return {
        "lesion": kind, "detector": DETECTORS[detector], "map": map_kind, "iterations": checkpoint_iteration(run),
        "train_minutes": training_minutes(run), "abnormal": f"{metrics.get('abnormal')}/{metrics['volumes']}",
        "auroc": metrics.get("auroc_score"), "auprc": metrics.get("auprc_score"),
        "auprc_chance": metrics.get("auprc_chance"), "auroc_p99": metrics.get("auroc_score_p99"),
        "auroc_max": metrics.get("auroc_score_max"),
        "auroc_10mm": auroc_subset(rows, LARGE_MM), "auroc_brighter": metrics.get("auroc_score_brighter_max"),
        "auroc_lung": metrics.get("auroc_score_lung_max"),
        "auroc_lung_10mm": auroc_subset(rows, LARGE_MM, "score_lung_max") if map_kind == "residual" else None,
        "auroc_blob": metrics.get("auroc_score_blob_max"),
        "auroc_blob_10mm": auroc_subset(rows, LARGE_MM, "score_blob_max"),
        "voxel_auroc": metrics.get("voxel_auroc"),
        "voxel_auprc": metrics.get("voxel_auprc"), "lesion_voxel_fraction": metrics.get("lesion_voxel_fraction"),
        "best_dice": metrics.get("best_dice"),
        "lesions_detected": f"{det['n_detected']}/{det['n_lesions']}" if det else None,
        "detected_lt10mm": rate(0), "detected_10_20mm": rate(1), "detected_ge20mm": rate(2),
    }


def ensemble_row(ws: Workspace, kind: str, members: list[Path], detectors: list[str], tag: str) -> dict[str, Any]:
    """The ensemble of the detectors' normative outputs ``members`` on one test set (``medgen anomaly-ensemble``:
    the mean of their calibrated blob excess) as a table row: volume-level columns only."""
    from medgen.inference.anomaly_ensemble import anomaly_ensemble

    out_dir = ws.root / "anomaly" / f"ensemble-{'-'.join(detectors)}" / f"{kind}{tag}"
    rows, metrics = anomaly_ensemble(members, out_dir)
    ws.record(["anomaly-ensemble", *map(str, members), "--out", str(out_dir)])
    m = metrics or {}
    large = auroc_subset(rows, LARGE_MM)
    print(f"anomaly: {ENSEMBLE} on {kind}: AUROC {m.get('auroc_score', float('nan')):.3g}, "
          f">= {LARGE_MM:g} mm {large if large is None else f'{large:.3g}'}", flush=True)
    return {"lesion": kind, "detector": ENSEMBLE, "map": "normative", "abnormal": f"{m.get('abnormal')}/{len(rows)}",
            "auroc": m.get("auroc_score"), "auprc": m.get("auprc_score"), "auprc_chance": m.get("auprc_chance"),
            "auroc_10mm": large, "auroc_blob": m.get("auroc_score"), "auroc_blob_10mm": large}


def save_kind_figure(path: Path, kind: str, test_dir: Path, scored: dict[str, Path], rows: list[dict[str, Any]]
                     ) -> Path:
    """One abnormal test volume (the one with the largest lesion): per detector (rows) the input, its
    reconstruction, its map and the true lesion, axial slice through that lesion's centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.core.fileio import atomic_path
    from medgen.data.dataset import VolumeDataset

    best = max((r for r in rows if int(r["abnormal"])), key=lambda r: float(r.get("largest_lesion_mm", 0)))
    sid = best["id"]
    ds = VolumeDataset(test_dir, split="all", label_column=None, keys=("image", "lesion"), ids=[sid])
    item = ds[0]
    image, lesion = item["image"][0].numpy(), item["lesion"][0].numpy()
    ids, counts = np.unique(lesion[lesion > 0], return_counts=True)
    z = int(round(np.argwhere(lesion == ids[np.argmax(counts)])[:, 2].mean()))
    maps, recs = {}, {}
    for det, out_dir in scored.items():
        with np.load(out_dir / "outputs" / f"{sid}.npz") as f:
            maps[det], recs[det] = f["map"], f["reconstruction"]
    vmax = max(float(np.percentile(m, 99.9)) for m in maps.values()) or 1.0
    fig, axes = plt.subplots(len(scored), 4, figsize=(8.4, 2.2 * len(scored)), squeeze=False)
    for r, det in enumerate(scored):
        panels = ((image, "gray", -1, 1, "input"), (recs[det], "gray", -1, 1, "reconstruction"),
                  (maps[det], "magma", 0, vmax, "anomaly map"), (lesion > 0, "gray", 0, 1, "true lesion"))
        for c, (vol, cmap, lo, hi, title) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(np.asarray(vol, dtype=np.float32)[:, :, z].T, cmap=cmap, vmin=lo, vmax=hi, origin="lower",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r][0].set_ylabel(DETECTORS[det], fontsize=8)
    fig.suptitle(f"{kind}: test volume {sid} (largest lesion {float(best['largest_lesion_mm']):.0f} mm), "
                 f"axial slice {z}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    import csv

    from medgen.core.device import resolve_device
    from medgen.families import registry
    from medgen.inference.anomaly import (ENVELOPE_TOLERANCE_MM, anomaly_dataset, envelope_tolerance,
                                          reference_statistics)

    detectors = _names(args.detectors, DETECTORS, "--detectors")
    kinds = _names(args.lesions, LESION_KINDS, "--lesions")
    if not args.minutes > 0:
        raise UsageError(f"--minutes {args.minutes}: need a positive budget")
    if not ws.uses_phantoms:
        raise UsageError("the anomaly experiment scores against the phantoms' known lesions; it runs on the built-in "
                         "phantoms only (score your own scans with `medgen anomaly RUN DATA --out DIR`)")
    s = ws.scale
    n_test = s.n_heldout if args.test_volumes is None else args.test_volumes
    if n_test < 4:
        raise UsageError(f"--test-volumes {n_test}: need at least 4 (normal and abnormal ones)")
    size = args.size or s.small_size
    if size < 16:
        raise UsageError(f"--size {size}: need at least 16")
    if args.shifts < 1:
        raise UsageError(f"--shifts {args.shifts}: need at least one placement of the checkerboard")
    if args.shifts > 1 and "inpaint" not in detectors:
        raise UsageError(f"--shifts {args.shifts}: only the inpaint detector (mask-and-inpaint) has a checkerboard; "
                         "add it to --detectors")
    raw_size = ws.render_size(size)  # the test phantoms' grid is the training phantoms'
    reference_dir = ws.datasets(size)[1]  # held-out normal phantoms: the normative maps' reference
    if "inpaint" in detectors and args.shifts > inpaint_box(ws, size):  # the box needs the phantoms' voxel size
        raise UsageError(f"--shifts {args.shifts}: need 1 to {inpaint_box(ws, size)}, the edge of mask-and-inpaint's "
                         f"cubes at {size}³")
    tag = "" if n_test == s.n_heldout else f"-n{n_test}"  # a test set of another size is another set
    tests = {kind: phantom_dataset(ws, "thorax-ct", f"lesions-{kind}-{size}{tag}", n_test, size,
                                   ws.seed + 100 + k, lesions=(kind,), raw_size=raw_size)
             for k, kind in enumerate(kinds)}
    runs = detector_runs(ws, detectors, size, args.minutes)
    device = resolve_device(ws.device)

    rows: list[dict[str, Any]] = []
    scored: dict[str, dict[str, Path]] = {kind: {} for kind in kinds}
    per_volume: dict[str, list[dict[str, Any]]] = {}
    for det in detectors:
        run_dir = runs[det]
        model = registry.load(run_dir, device=device)
        options = {"box": inpaint_box(ws, size)} if det == "inpaint" else {}
        if det == "inpaint" and args.shifts > 1:
            options["shifts"] = args.shifts
        # other reconstruction options are other maps: their own folder, never the cached maps of the default
        suffix = f"-shifts{args.shifts}" if "shifts" in options else ""
        base = ws.root / "anomaly" / f"{det}-{run_dir.name}-it{checkpoint_iteration(run_dir)}{suffix}"
        flags = [a for k, v in options.items() for a in (f"--{k}", str(v))]
        reference = reference_statistics(model, reference_dir, base / "reference", progress=ws.progress, **options)
        for kind in kinds:
            out_dir = base / f"{kind}{tag}"
            summary = anomaly_dataset(model, tests[kind], out_dir, figures=0, progress=ws.progress,
                                      reference=reference, **options)
            ws.record(["anomaly", str(run_dir), str(tests[kind]), "--out", str(out_dir), "--reference",
                       str(reference_dir), "--figures", "0", *flags])
            with open(out_dir / "scores.csv", newline="") as fh:
                vols = list(csv.DictReader(fh))
            per_volume[f"{det}/{kind}"] = vols
            metrics = summary.metrics or {}
            rows.append(table_row(kind, det, run_dir, metrics, vols))
            zvols = [{**v, "score": v["z_score_mean"], "score_blob_max": v["score_blob_excess"]} for v in vols]
            rows.append(table_row(kind, det, run_dir, metrics.get("normative") or {}, zvols, "normative"))
            scored[kind][det] = out_dir
            r = rows[-2]
            shown = ", ".join(f"{label} {r[key]:.3g}" for key, label in (
                ("auroc", "AUROC"), ("voxel_auprc", "voxel AUPRC"), ("lesion_voxel_fraction", "prevalence"),
                ("best_dice", "best Dice")) if r.get(key) is not None)
            print(f"anomaly: {DETECTORS[det]} on {kind}: {shown or 'no metric (see metrics.json notes)'}",
                  flush=True)
    if len(detectors) > 1:
        for kind in kinds:
            rows.append(ensemble_row(ws, kind, [scored[kind][d] for d in detectors], detectors, tag))
    order = [*DETECTORS.values(), ENSEMBLE]
    rows.sort(key=lambda r: (kinds.index(r["lesion"]), order.index(r["detector"]), r["map"] != "residual"))
    envelope_voxels = envelope_tolerance(_spacing_mm(ws, size))[0]
    inpainting = ""
    if "inpaint" in detectors:
        box = inpaint_box(ws, size)
        inpainting = (f"Mask-and-inpaint: a `unet` (inpaint task) trained for the scale's {ws.train_iters} iterations "
                      f"on the normal volumes with random boxes of {box} voxels ({INPAINT_BOX_MM:g} mm) hiding "
                      f"{INPAINT_FRACTION:.1%} of the body, scored with the checkerboard of {box}-voxel cubes "
                      + (f"(`medgen anomaly --box {box}`)." if args.shifts == 1 else
                         f"laid {args.shifts} times, moved along every axis by {box / args.shifts:g} voxel(s) each "
                         f"time, the reconstructions averaged (`medgen anomaly --box {box} --shifts {args.shifts}`)."))
    notes = [
        f"Normal training data: the {s.n_train} thorax-CT training phantoms (no lesions) at {size}³; test sets: "
        f"{n_test} held-out phantoms per lesion kind (other seeds, rendered at {raw_size}³ and preprocessed to "
        f"{size}³ like the training set), lesions painted into about half of them (`abnormal`).",
        " ".join(n for n in (training_note(detectors, args.minutes), inpainting) if n),
        "auroc, auprc: volume level, of the detector's score (the mean of the map |x − x̂|; f-AnoGAN: image plus "
        "feature residual), auprc_chance the share of abnormal volumes; auroc_p99, auroc_max: of the map's 99th percentile and "
        "maximum; "
        f"auroc_10mm: normal volumes against those whose largest lesion is ≥ {LARGE_MM:g} mm (equivalent "
        "diameter). auroc_brighter: of the largest signed residual x − x̂ (lesions denser than the normal "
        "anatomy predicts); auroc_lung (and auroc_lung_10mm, as auroc_10mm): of the largest x − x̂ where the "
        "reconstruction is below −500 HU, i.e. where the model expects lung (residual rows only: they are "
        "scores of the residual itself). auroc_blob (and auroc_blob_10mm): of the strongest compact bright spot "
        "of x − x̂, the Hessian's weakest curvature where all three are negative at σ = 4.5 mm (`score_blob_max`), "
        "which the residuals along vessels and organ edges hardly reach; in the normative rows of the same "
        "columns, by how much it exceeds the strongest bright spot any reference normal phantom shows within "
        f"{ENVELOPE_TOLERANCE_MM:g} mm of that place ({envelope_voxels} voxel{'s' if envelope_voxels > 1 else ''} at "
        f"{size}³; `score_blob_excess`).",
        "voxel_auroc, voxel_auprc: every voxel of every test volume pooled against the lesion masks; their "
        "chance level is lesion_voxel_fraction. best_dice: the best Dice of the thresholded maps over all "
        "thresholds (an upper bound: the threshold is chosen on the masks).",
        f"map: residual, the map |x − x̂| itself; normative, each voxel's residual standardised by the mean "
        f"and spread of the maps of {s.n_heldout} held-out normal phantoms at that voxel (`medgen anomaly "
        "--reference`), which removes the errors every volume shares; its volume scores are those of the "
        "standardised map (auroc: its mean).",
        "lesions_detected, detected_*: lesions whose map maximum reaches the threshold that flags 0.1 % of the "
        "normal test volumes' voxels, by equivalent diameter (<10 mm, 10–20 mm, ≥20 mm).",
    ]
    if len(detectors) > 1:
        notes.append(
            f"{ENSEMBLE}: `medgen anomaly-ensemble` of the {len(detectors)} detectors' normative outputs: a "
            "volume's score is the mean over the detectors of `score_blob_excess_z`, the blob excess in standard "
            "deviations of the excess each reference normal phantom reaches against the envelope of the other "
            "ones under that detector (so detectors of different residual scales count alike). Volume level only "
            "(auroc and auroc_blob are the same score).")
    out.write_table(rows, COLUMNS, title=f"Anomaly detection on thorax-CT phantoms at {size}³", notes=notes)
    for kind in kinds:
        figure = save_kind_figure(out.path(f"anomaly-{kind}.png"), kind, tests[kind], scored[kind],
                                  per_volume[f"{detectors[0]}/{kind}"])
        out.add_figure(figure)
    return {"size": size, "detectors": detectors, "lesions": kinds, "minutes": args.minutes, "test_volumes": n_test,
            "shifts": args.shifts,
            "runs": {d: str(p) for d, p in runs.items()}, "rows": rows, "commands": list(ws.log)}
