"""``medgen experiment registration``: learned vs classical deformable registration, against the true displacement.

1. Data: brain-MRI phantoms at the scale's small size (32³ at demo, 6.25 mm voxels): a training set (the
   scale's number of training subjects) with its tissue label maps, and ``--pairs`` held-out pairs of distinct
   subjects of other seeds, written with their true displacement to the template (``medgen phantoms
   --displacement``). Both are preprocessed at the phantoms' own size with ``--fit crop-pad
   --keep-blank-slices``, which leaves the voxel grid untouched (only the intensities are normalised), so the
   phantoms' displacement fields and affines hold for the preprocessed volumes as they are.
2. Truth: for each pair (moving M, fixed F), :func:`medgen.data.phantoms.deformation.true_displacement` gives
   the point of M that corresponds to every voxel of F, in mm along the world axes; with F's affine A it is
   u = A[:3, :3]⁻¹ · d in voxels, the registration convention (``warped(p) = moving(p + u(p))``, component
   ``d`` along array axis ``d``; :mod:`medgen.metrics.registration`).
3. Methods (``--methods``): ``learned``, the ``registration`` family (VoxelMorph on MONAI, diffeomorphic)
   trained on random pairs of the training set, weakly supervised by the tissue maps (``--target tissue``,
   ``seg_weight``); ``adversarial``, the same with a discriminator (``adversarial_weight``); ``bspline`` and
   ``demons``, SimpleITK's B-spline and diffeomorphic demons registration (no training); ``identity``, no
   registration (the floor). Default: all but ``adversarial``, which trains a second model as long as the
   first. The true displacement itself is scored as a reference row.

Writes ``registration.csv``/``.md``: per method, mean ± std over pairs of the Dice of the warped tissue map
(the mean over CSF, grey matter, white matter and ventricles, and each of them), the target registration
error against the true displacement inside the fixed subject's brain mask (mean and 95th percentile, mm),
the share of voxels with a non-positive Jacobian determinant, seconds per pair (one CPU thread; the learned
models after a warm-up) and the speed-up over the classical baseline; ``registration-pairs.csv``: every pair
and method; ``registration.png``: one pair, fixed | moving | each method's warped image, its warped tissue map,
and the learned model's Jacobian determinant. Targets: the learned model's Dice within 0.02 of the
classical baseline's at ≥ 10× lower runtime per pair, with < 0.5 % folding voxels.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from medgen.core.errors import InputError, UsageError
from medgen.core.tables import write_csv
from medgen.experiments.workspace import ExperimentOutput, Workspace, checkpoint_iteration, step

HELP = ("deformable registration: VoxelMorph (plain, adversarial) vs SimpleITK B-spline/demons on brain phantoms "
        "with true displacement")
DESCRIPTION = __doc__.split("\n\n", 1)[1]
KIND = "brain-mri"
METHODS: dict[str, str] = {
    "learned": "VoxelMorph (learned)",
    "adversarial": "VoxelMorph + adversarial",
    "bspline": "B-spline (SimpleITK)",
    "demons": "diffeomorphic demons (SimpleITK)",
    "identity": "identity (no registration)",
}
LEARNED = ("learned", "adversarial")
TRUE = "true displacement (reference)"
#: The tissue structures scored (classes of the brain phantoms' ``tissue`` map; 0 is the background).
STRUCTURES = {1: "csf", 2: "gm", 3: "wm", 4: "ventricles"}
#: Held-out pairs and training iterations per scale (``--pairs``, ``--iters`` override them).
PAIRS = {"smoke": 2, "demo": 16, "full": 64}
ITERS = {"smoke": 2, "demo": 400, "full": 20_000}
PRESET = "small"
SEG_WEIGHT = 1.0
ADVERSARIAL_WEIGHT = 0.1
#: The classical baseline's settings (ClassicalRegistration's defaults, on one thread).
BSPLINE = {"method": "bspline", "mesh_size": 4, "iterations": 100, "threads": 1}
DEMONS = {"method": "demons", "iterations": 100, "demons_sigma": 1.5, "threads": 1}
#: The default methods: the adversarial variant doubles the training time, so it runs when asked for.
DEFAULT_METHODS = "learned,bspline,demons,identity"
DEFAULTS = {"methods": DEFAULT_METHODS, "pairs": None, "seg_weight": SEG_WEIGHT,
            "adversarial_weight": ADVERSARIAL_WEIGHT}
COLUMNS = ("method", "pairs", "iterations", "train_minutes", "dice_mean", "dice_std",
           *(f"dice_{s}" for s in STRUCTURES.values()), "tre_mean_mm", "tre_std_mm", "tre_p95_mm",
           "folding_pct", "folding_pct_max", "seconds_per_pair", "speedup_vs_classical")
PAIR_COLUMNS = ("pair", "moving", "fixed", "method", "dice_mean", *(f"dice_{s}" for s in STRUCTURES.values()),
                "tre_mean_mm", "tre_p95_mm", "folding_pct", "seconds")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", default=DEFAULT_METHODS, metavar="M,M",
                   help=f"methods to compare, of {', '.join(METHODS)} (default {DEFAULT_METHODS}; adversarial trains a "
                        "second model as long as the first)")
    p.add_argument("--pairs", type=int, default=None, metavar="N",
                   help="held-out pairs of distinct subjects (default: 16 at demo scale, 2 smoke, 64 full)")
    p.add_argument("--seg-weight", type=float, default=SEG_WEIGHT, metavar="W",
                   help=f"weight of the tissue-map Dice loss of the learned models (default {SEG_WEIGHT:g}; 0: "
                        "unsupervised)")
    p.add_argument("--adversarial-weight", type=float, default=ADVERSARIAL_WEIGHT, metavar="W",
                   help=f"weight of the adversarial loss of the adversarial variant (default {ADVERSARIAL_WEIGHT:g})")


def _methods(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METHODS]
    if not names or unknown:
        raise UsageError(f"--methods {text!r}: choose from {', '.join(METHODS)}")
    return names


# ----------------------------------------------------------------------------- data and truth


def brain_dataset(ws: Workspace, name: str, n: int, size: int, seed: int, displacement: bool) -> tuple[Path, Path]:
    """(raw phantom folder, preprocessed folder) of ``n`` brain phantoms at ``size``³: ``medgen phantoms`` into
    ``WORK/phantoms-sets/NAME`` (with ``--displacement`` when asked) and ``medgen preprocess --fit crop-pad
    --keep-blank-slices`` into ``WORK/data/NAME``, which keeps the phantoms' voxel grid. Each step is skipped
    when its output is complete; both are recorded in ``ws.log``."""
    from medgen.data.phantoms.phantom_set import write_phantom_set
    from medgen.data.preprocess import PreprocessSettings, preprocess_folder
    from medgen.viz.mosaic import save_phantom_set_mosaic

    raw = ws.root / "phantoms-sets" / name
    argv = ["phantoms", "--kind", KIND, "--n", str(n), "--size", str(size), "--seed", str(seed),
            *(["--displacement"] if displacement else []), "--out", str(raw), "--workers", "2"]
    ws.record(argv)
    if not (raw / "manifest.csv").is_file():
        with step(argv, f"phantoms ({name})"):
            rows = write_phantom_set(KIND, n, size, seed, raw, workers=2, progress=ws.progress,
                                     displacement=displacement)
            save_phantom_set_mosaic(raw, rows, KIND)
    folder = ws.root / "data" / name
    argv = ["preprocess", str(raw), str(folder), "--modality", "mri", "--size", str(size), "--fit", "crop-pad",
            "--keep-blank-slices", "--workers", "2"]
    if not ws.progress:
        argv.append("--no-progress")
    ws.record(argv)
    if not (folder / "manifest.csv").is_file():
        with step(argv, f"preprocess ({name})"):
            summary = preprocess_folder(raw, folder, PreprocessSettings(modality="mri", size=size, fit="crop-pad",
                                                                        drop_blank_slices=False),
                                        workers=2, progress=ws.progress)
            if summary.manifest is None or summary.failed:
                raise InputError(f"{raw}: {len(summary.failed)} volume(s) could not be preprocessed")
    return raw, folder


def displacement_in_voxels(displacement_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A displacement ``[3, X, Y, Z]`` in mm along the world axes of a grid with ``affine`` (4×4) as the
    registration convention's ``[3, X, Y, Z]`` in voxels along the array axes: ``A[:3, :3]⁻¹ · d`` at every
    voxel (with a diagonal affine, each component divided by its spacing, its sign flipped on a flipped axis)."""
    d = np.asarray(displacement_mm, dtype=np.float64)
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3])
    return np.einsum("ij,jxyz->ixyz", inv, d)


def true_voxel_displacement(raw: Path, moving_id: str, fixed_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(u, spacing): the true displacement fixed → moving of two subjects of the phantom set ``raw`` (written
    with ``--displacement``) in voxels of the fixed grid (:func:`displacement_in_voxels` of
    :func:`~medgen.data.phantoms.deformation.true_displacement`), float32, and the fixed grid's voxel size (mm)."""
    from medgen.data.phantoms.deformation import read_displacement, true_displacement

    moving, fixed = read_displacement(raw, moving_id), read_displacement(raw, fixed_id)
    d = true_displacement(moving, fixed)
    spacing = np.linalg.norm(fixed[1][:3, :3], axis=0)
    return displacement_in_voxels(d, fixed[1]).astype(np.float32), spacing


def heldout_subjects(raw: Path, folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per held-out subject: ``image`` (the preprocessed volume, [-1, 1]) and ``tissue`` (the phantom's NIfTI label
    map). InputError unless the preprocessed tissue map equals the NIfTI one voxel for voxel (the grid kept)."""
    import nibabel as nib

    from medgen.data.dataset import VolumeDataset

    ds = VolumeDataset(folder, split="all", label_column=None, keys=("image", "tissue"))
    out = {}
    for i in range(len(ds)):
        item = ds[i]
        sid = ds.ids[i]
        tissue = np.asarray(nib.load(str(raw / "tissue" / f"{sid}.nii.gz")).dataobj).astype(np.int16)
        if tissue.shape != tuple(item["tissue"].shape[1:]) or not np.array_equal(tissue, item["tissue"][0].numpy()):
            raise InputError(f"{folder}: subject {sid}'s preprocessed grid differs from the phantom's; the true "
                             "displacement would not apply (preprocess with --fit crop-pad --keep-blank-slices at "
                             "the phantoms' size)")
        out[sid] = {"image": item["image"][0].numpy().astype(np.float32), "tissue": tissue}
    return out


def brain_mask(tissue: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped phantom: every voxel of its tissue map that is not background."""
    return np.asarray(tissue) > 0


def score_pair(u: np.ndarray, moving_tissue: np.ndarray, fixed_tissue: np.ndarray, u_true: np.ndarray,
               spacing: Any) -> dict[str, float]:
    """Dice of ``moving_tissue`` warped by ``u`` (nearest neighbour) against ``fixed_tissue`` per structure and
    their mean; TRE of ``u`` against ``u_true`` inside the fixed brain (mean, 95th percentile, mm); % voxels
    with Jacobian determinant ≤ 0 (whole volume)."""
    from medgen.inference.register import warp
    from medgen.metrics.registration import folding_fraction, jacobian_determinant, target_registration_error
    from medgen.metrics.registration import warped_label_dice

    warped = warp(np.asarray(moving_tissue, dtype=np.int16), u, "nearest")
    dice = warped_label_dice(warped, fixed_tissue, labels=list(STRUCTURES))
    row = {f"dice_{name}": dice[f"dice_{k}"] for k, name in STRUCTURES.items()}
    row["dice_mean"] = float(np.nanmean([row[f"dice_{n}"] for n in STRUCTURES.values()]))
    tre = target_registration_error(u, u_true, spacing, mask=brain_mask(fixed_tissue))
    row.update(tre_mean_mm=tre["mean"], tre_p95_mm=tre["p95"],
               folding_pct=100.0 * folding_fraction(jacobian_determinant(u)))
    return row


def summarise(method: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: means over pairs (and the std of Dice and TRE, ddof 1), folding's maximum."""
    def values(key: str) -> np.ndarray:
        return np.array([float(r[key]) for r in rows], dtype=np.float64)

    def std(key: str) -> float:
        v = values(key)
        return float(np.std(v, ddof=1)) if v.size > 1 else math.nan

    out: dict[str, Any] = {"method": method, "pairs": len(rows), "dice_mean": float(values("dice_mean").mean()),
                           "dice_std": std("dice_mean")}
    out.update({f"dice_{n}": float(np.nanmean(values(f"dice_{n}"))) for n in STRUCTURES.values()})
    out.update(tre_mean_mm=float(values("tre_mean_mm").mean()), tre_std_mm=std("tre_mean_mm"),
               tre_p95_mm=float(values("tre_p95_mm").mean()), folding_pct=float(values("folding_pct").mean()),
               folding_pct_max=float(values("folding_pct").max()))
    secs = [float(r["seconds"]) for r in rows if r.get("seconds") is not None]
    out["seconds_per_pair"] = float(np.mean(secs)) if secs else None
    return out


# ----------------------------------------------------------------------------- methods


class Identity:
    """No registration: the zero displacement."""

    def register(self, moving: np.ndarray, fixed: np.ndarray) -> dict[str, np.ndarray]:
        return {"warped": np.asarray(moving, dtype=np.float32),
                "displacement": np.zeros((3, *np.shape(fixed)), dtype=np.float32)}


def timed_register(registrar: Any, moving: np.ndarray, fixed: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    t0 = time.perf_counter()
    out = registrar.register(moving, fixed)
    return out, time.perf_counter() - t0


def learned_runs(ws: Workspace, methods: list[str], train_dir: Path, size: int, iters: int, seg_weight: float,
                 adversarial_weight: float) -> dict[str, Path]:
    runs = {}
    base = {"seg_weight": seg_weight}
    tag = f"registration-brain-{size}-seg{seg_weight:g}"
    if "learned" in methods:
        runs["learned"] = ws.model(f"{tag}-{iters}", size, family="registration", preset=PRESET, data=train_dir,
                                   iters=iters, model_settings={"target": "tissue"}, hparams=base)
    if "adversarial" in methods:
        runs["adversarial"] = ws.model(f"{tag}-adv{adversarial_weight:g}-{iters}", size, family="registration",
                                       preset=PRESET, data=train_dir, iters=iters, model_settings={"target": "tissue"},
                                       hparams={**base, "adversarial_weight": adversarial_weight})
    return runs


# ----------------------------------------------------------------------------- figure


def save_figure(path: Path, fixed: dict[str, np.ndarray], moving: dict[str, np.ndarray],
                outputs: dict[str, dict[str, np.ndarray]], jacobian: np.ndarray | None, title: str) -> Path:
    """Axial slice through the centre: row 1 fixed | moving | each method's warped image | the learned model's
    Jacobian determinant; row 2 the tissue maps (fixed, moving, each method's warped map)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.core.fileio import atomic_path
    from medgen.inference.register import warp

    z = fixed["image"].shape[2] // 2
    cols = 2 + len(outputs) + (jacobian is not None)
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols, 4.5), squeeze=False)

    def show(ax, vol, cmap, lo, hi, label):
        ax.imshow(np.asarray(vol, dtype=np.float32)[:, :, z].T, cmap=cmap, vmin=lo, vmax=hi, origin="lower",
                  interpolation="nearest")
        ax.set_title(label, fontsize=7)

    show(axes[0][0], fixed["image"], "gray", -1, 1, "fixed")
    show(axes[0][1], moving["image"], "gray", -1, 1, "moving")
    show(axes[1][0], fixed["tissue"], "tab10", 0, 9, "fixed tissue")
    show(axes[1][1], moving["tissue"], "tab10", 0, 9, "moving tissue")
    for c, (name, out) in enumerate(outputs.items(), start=2):
        show(axes[0][c], out["warped"], "gray", -1, 1, name)
        show(axes[1][c], warp(moving["tissue"], out["displacement"], "nearest"), "tab10", 0, 9, f"{name}: tissue")
    if jacobian is not None:
        hi = max(1.5, float(np.percentile(np.abs(jacobian - 1.0), 99)) + 1.0)
        show(axes[0][-1], jacobian, "coolwarm", 2.0 - hi, hi, "learned: Jacobian det.")
        axes[1][-1].axis("off")
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

    from medgen.experiments.synthesis import training_minutes
    from medgen.families import registry
    from medgen.inference.classical_registration import ClassicalRegistration

    methods = _methods(args.methods)
    n_pairs = PAIRS.get(ws.scale.name, 16) if args.pairs is None else args.pairs
    if n_pairs < 1:
        raise UsageError(f"--pairs {args.pairs}: need at least 1")
    if not args.seg_weight >= 0:
        raise UsageError(f"--seg-weight {args.seg_weight}: need ≥ 0")
    if "adversarial" in methods and not args.adversarial_weight > 0:
        raise UsageError(f"--adversarial-weight {args.adversarial_weight}: need > 0 for the adversarial variant")
    if not ws.uses_phantoms:
        raise UsageError("the registration experiment scores against the brain phantoms' true displacement; it runs "
                         "on the built-in phantoms only (register your own scans with `medgen register RUN MOVING "
                         "FIXED --out DIR`)")
    s = ws.scale
    size = s.small_size
    iters = ws.iters or ITERS.get(s.name, s.iters)
    _, train_dir = brain_dataset(ws, f"registration-train-{size}", s.n_train, size, ws.seed + 600, False)
    raw, test_dir = brain_dataset(ws, f"registration-pairs-{size}-{n_pairs}", 2 * n_pairs, size, ws.seed + 601, True)
    subjects = heldout_subjects(raw, test_dir)
    ids = sorted(subjects)
    pairs = [(ids[2 * k], ids[2 * k + 1]) for k in range(n_pairs)]  # (moving, fixed): each subject in one pair

    runs = learned_runs(ws, methods, train_dir, size, iters, args.seg_weight, args.adversarial_weight)
    registrars: dict[str, Any] = {}
    for m in methods:
        if m in LEARNED:
            registrars[m] = registry.load(runs[m], device=torch.device("cpu"))  # runtime: CPU, one thread
        elif m == "bspline":
            registrars[m] = ClassicalRegistration(**BSPLINE)
        elif m == "demons":
            registrars[m] = ClassicalRegistration(**DEMONS)
        else:
            registrars[m] = Identity()

    truth = {}
    for k, (mid, fid) in enumerate(pairs):
        truth[k] = true_voxel_displacement(raw, mid, fid)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    per_pair: list[dict[str, Any]] = []
    figure_outputs: dict[str, dict[str, np.ndarray]] = {}
    try:
        for m in methods:
            if m in LEARNED:  # warm-up: the first call builds kernels and caches
                mid, fid = pairs[0]
                registrars[m].register(subjects[mid]["image"], subjects[fid]["image"])
            for k, (mid, fid) in enumerate(pairs):
                result, seconds = timed_register(registrars[m], subjects[mid]["image"], subjects[fid]["image"])
                u = np.asarray(result["displacement"], dtype=np.float32)
                u_true, spacing = truth[k]
                row = score_pair(u, subjects[mid]["tissue"], subjects[fid]["tissue"], u_true, spacing)
                per_pair.append({"pair": k, "moving": mid, "fixed": fid, "method": METHODS[m], **row,
                                 "seconds": None if m == "identity" else seconds})
                if k == 0:
                    figure_outputs[METHODS[m]] = {"warped": result["warped"], "displacement": u}
            mean = summarise(METHODS[m], [r for r in per_pair if r["method"] == METHODS[m]])
            print(f"registration: {METHODS[m]}: Dice {mean['dice_mean']:.3f} ± {mean['dice_std']:.3f}, TRE "
                  f"{mean['tre_mean_mm']:.2f} mm, folding {mean['folding_pct']:.3f} %"
                  + (f", {mean['seconds_per_pair']:.3f} s/pair" if mean["seconds_per_pair"] is not None else ""),
                  flush=True)
    finally:
        torch.set_num_threads(threads)
    for k, (mid, fid) in enumerate(pairs):
        u_true, spacing = truth[k]
        row = score_pair(u_true, subjects[mid]["tissue"], subjects[fid]["tissue"], u_true, spacing)
        per_pair.append({"pair": k, "moving": mid, "fixed": fid, "method": TRUE, **row, "seconds": None})

    rows = [summarise(name, [r for r in per_pair if r["method"] == name])
            for name in [*(METHODS[m] for m in methods), TRUE]]
    classical = next((m for m in ("bspline", "demons") if m in methods), None)
    ref = next((r["seconds_per_pair"] for r in rows if classical and r["method"] == METHODS[classical]), None)
    for r in rows:
        sec = r.get("seconds_per_pair")
        r["speedup_vs_classical"] = ref / sec if (ref and sec) else None
        key = next((m for m in LEARNED if METHODS[m] == r["method"]), None)
        r["iterations"] = checkpoint_iteration(runs[key]) if key else None
        r["train_minutes"] = training_minutes(runs[key]) if key else None

    notes = [
        f"Data: {s.n_train} brain-MRI phantoms for training and {n_pairs} held-out pairs of distinct subjects "
        f"(other seeds; each subject in one pair, moving → fixed), all at {size}³ "
        f"({200 / size:g} mm voxels), preprocessed with --fit crop-pad --keep-blank-slices (the phantoms' own grid, "
        "intensities to [-1, 1] by percentiles); every method registers the same preprocessed images.",
        f"Learned: the registration family (preset {PRESET}, VoxelMorph on MONAI, 7 scaling-and-squaring steps, "
        f"LNCC + bending energy λ 1) trained {iters} iterations (batch {s.batch}) on random pairs of the training "
        f"set, weakly supervised by the tissue maps (--target tissue, seg_weight {args.seg_weight:g}), its EMA weights"
        + (f"; adversarial: the same plus a patch discriminator, adversarial_weight {args.adversarial_weight:g}."
           if "adversarial" in methods else "."),
        f"Classical: SimpleITK B-spline ({BSPLINE['mesh_size']}³ control-grid cells, mean squares, L-BFGS-B "
        f"≤ {BSPLINE['iterations']} iterations per level, shrink 2,1) and diffeomorphic demons "
        f"({DEMONS['iterations']} iterations, σ {DEMONS['demons_sigma']:g} voxels), "
        "no training; identity: the zero displacement.",
        "dice_*: Dice of the moving subject's tissue map warped by the method's displacement (nearest neighbour, "
        "border values outside) against the fixed subject's, per structure (CSF outside the ventricles, grey "
        "matter, white matter, lateral ventricles); dice_mean the mean over the 4, averaged over pairs "
        "(dice_std: its std over pairs, ddof 1).",
        "tre_*: |u − u_true| in mm (voxel components × the spacing) over the fixed subject's brain mask (tissue "
        "label > 0); tre_mean_mm the mean over the mask averaged over pairs (tre_std_mm: its std over pairs), "
        "tre_p95_mm each pair's 95th percentile averaged over pairs. u_true: "
        "deformation.true_displacement of the two phantoms' fields (mm, world axes) converted to voxels with "
        "the fixed affine (A[:3, :3]⁻¹ d), the convention warped(p) = moving(p + u(p)).",
        "folding_pct: % of all voxels of the volume with det(I + ∇u) ≤ 0 (central differences), mean over pairs; "
        "folding_pct_max the worst pair.",
        "seconds_per_pair: wall time of one register(moving, fixed) call (displacement, warped image and Jacobian), "
        "mean over pairs, on one CPU thread (torch and SimpleITK); the learned models on the CPU after one warm-up "
        "call. speedup_vs_classical: the "
        + (f"{METHODS[classical]}'s seconds per pair divided by the method's." if classical else
           "classical baseline's seconds per pair divided by the method's (no classical method ran).")
        + " The machine was shared, so times are upper bounds; their ratio is what to compare.",
        f"{TRUE}: the true displacement scored like a method. Its Dice is below 1 because the subjects differ "
        "in atrophy (a change of tissue, not a deformation: cortex thinned, ventricles enlarged) and by the "
        "nearest-neighbour resampling of 6.25 mm voxels; a method can exceed it by matching labels, not anatomy.",
        "Targets: the learned model's dice_mean within 0.02 of the B-spline's, speedup ≥ 10, folding < 0.5 %.",
    ]
    out.write_table(rows, COLUMNS, title=f"Deformable registration of brain phantoms at {size}³", notes=notes)
    write_csv(out.path("registration-pairs.csv"), per_pair, PAIR_COLUMNS)
    mid, fid = pairs[0]
    jac = None
    if "learned" in methods:
        from medgen.metrics.registration import jacobian_determinant

        jac = jacobian_determinant(figure_outputs[METHODS["learned"]]["displacement"])
    short = {METHODS[m]: m for m in methods}
    figure = save_figure(out.path("registration.png"), subjects[fid], subjects[mid],
                         {short[name]: o for name, o in figure_outputs.items()}, jac,
                         f"held-out pair 0: {mid} → {fid}, axial slice {size // 2}")
    out.add_figure(figure)
    return {"size": size, "methods": methods, "pairs": n_pairs, "iterations": iters,
            "runs": {m: str(p) for m, p in runs.items()}, "rows": rows, "commands": list(ws.log)}
