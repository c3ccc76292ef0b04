"""``medgen experiment image2image``: image-to-image tasks on simulated pairs, each model next to its trivial baseline.

For each task, the built-in phantoms (thorax CT; brain MRI for k-space) at the scale's small size
(demo: 32³) are degraded with ``medgen degrade`` — training and held-out sets alike, each subject with
its own noise — a ``unet`` and a ``pix2pix`` (``medgen train --family F --task T``, preset ``small``) are
trained on the training pairs, and every held-out pair is translated and compared with its clean target:

* ``sr``: slice gap ×4 (``--kind slices``, every 4th axial slice kept); baselines: nearest (the input)
  and linear interpolation between the kept slices;
* ``denoise``: quarter-dose CT (``--kind lowdose``, Poisson noise in the projections, 10⁵ photons per ray
  at full dose); baseline: the filtered back-projection of the low-dose data (the input);
* ``kspace``: ×4 Cartesian undersampling of brain MRI (``--kind kspace``, random lines, 8 % centre);
  baseline: the zero-filled reconstruction (the input);
* ``inpaint``: boxes hiding 10 % of the body (``--kind inpaint``); baseline: mean-filling (the input).
  The error that matters is inside the mask (``mae_mask``);
* ``seg2image``: the thorax phantoms' tissue label map → CT; baseline: each class's mean training
  intensity; also the relative error of the HU-measured lung and bone fractions;
* ``translate``: the brain phantoms' T1 → their T2 (true pairs); baseline: a T1-intensity lookup of the
  mean training T2.

Not run by default (``--tasks`` names them):

* ``outpaint``: thorax CT cut to a 100 mm-radius cylinder about the body (``--kind outpaint``); baseline:
  mean-filling (the input); the error inside the cut-away region is ``mae_mask``;
* ``restore``: brain MRI with rigid motion during the acquisition (``--kind motion``, TorchIO, ±5°, ±5 mm);
  baseline: the corrupted scan (the input);
* ``xray2ct``: thorax CT from its biplanar DRRs (``--kind drr``); baseline: the voxel-wise mean training CT.

Metrics (:mod:`medgen.metrics.paired_regions`), per held-out volume, then averaged: PSNR (dB, data range
2) over the volume and over the body, SSIM (3D, Gaussian window 11), NMSE, for CT the mean |error| in HU
inside the body, the lungs and bone, and for inpainting the mean |error| inside the hidden region. Writes ``image2image.csv``/``.md`` (a row per task and method, each model's gain over the
best baseline) and ``image2image-TASK.png`` (baselines | models | target | the first model's error, in
three planes, the first held-out subject).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medgen.experiments.workspace import ExperimentOutput, Workspace, step

HELP = ("image-to-image tasks (super-resolution, low-dose denoising, k-space, inpainting, segmentation→image, "
        "T1→T2, ...): unet, pix2pix vs trivial baselines")
DESCRIPTION = __doc__.split("\n\n", 1)[1]
DEFAULTS = {"tasks": "sr,denoise,kspace,inpaint,seg2image,translate", "families": "unet,pix2pix"}
FAMILIES = ("unet", "pix2pix", "cond-ddpm")  # cond-ddpm: about 15 CPU minutes of training per task at 32³, not a default


@dataclass(frozen=True)
class TaskSpec:
    """``kind``/``settings``: the ``medgen degrade`` that makes the pairs (None: the pairs are the phantoms' own
    volumes, ``tissue`` or ``t2``); ``baseline``: the trivial method's name; ``trivial``: what it is: ``input``
    (the degraded input itself), ``labels`` (each input label's mean training target), ``lookup`` (the mean
    training target in 64 bins of input intensity) or ``mean`` (the voxel-wise mean training target)."""

    task: str
    modality: str
    kind: str | None
    settings: tuple[str, ...]
    baseline: str
    trivial: str = "input"


TASK_SPECS = {
    "sr": TaskSpec("sr", "ct", "slices", ("factor=4",), "nearest (input)"),
    "denoise": TaskSpec("denoise", "ct", "lowdose", ("dose=0.25",), "FBP at 25 % dose (input)"),
    "kspace": TaskSpec("kspace", "mri", "kspace", ("acceleration=4",), "zero-filled (input)"),
    "inpaint": TaskSpec("inpaint", "ct", "inpaint", ("shape=box", "fraction=0.1"), "mean-filling (input)"),
    "seg2image": TaskSpec("seg2image", "ct", None, (), "class means (training set)", trivial="labels"),
    "translate": TaskSpec("translate", "mri", None, (), "T1 → mean T2 lookup (training set)", trivial="lookup"),
    "outpaint": TaskSpec("outpaint", "ct", "outpaint", ("fov_mm=100",), "mean-filling (input)"),
    "restore": TaskSpec("restore", "mri", "motion", ("degrees=5", "translation=5"), "motion-corrupted (input)"),
    "xray2ct": TaskSpec("xray2ct", "ct", "drr", (), "mean training CT", trivial="mean"),
}
COLUMNS = ("task", "method", "psnr", "psnr_std", "psnr_body", "ssim", "ssim_std", "nmse", "hu_mae_body", "hu_mae_lung",
           "hu_mae_bone", "mae_mask", "lung_fraction_err_pct", "bone_fraction_err_pct", "gain_db", "n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default=DEFAULTS["tasks"], metavar="LIST",
                   help=f"comma-separated tasks among {', '.join(TASK_SPECS)} (default {DEFAULTS['tasks']})")
    p.add_argument("--families", default=DEFAULTS["families"], metavar="LIST",
                   help=f"comma-separated image-to-image families among {', '.join(FAMILIES)} (default unet,pix2pix)")


def _mri_datasets(ws: Workspace, size: int) -> tuple[Path, Path]:
    """Brain-MRI phantoms (training and held-out), preprocessed at ``size``³."""
    from medgen.data.preprocess import PreprocessSettings, preprocess_folder
    from medgen.experiments.workspace import write_phantoms

    s = ws.scale
    out = []
    for name, n, seed in (("train", s.n_train, ws.seed), ("heldout", s.n_heldout, ws.seed + 1)):
        raw = ws.root / "phantoms-mri" / name
        if not (raw / "manifest.csv").is_file():
            argv = ["phantoms", "--kind", "brain-mri", "--n", str(n), "--size", str(size), "--seed", str(seed),
                    "--out", str(raw), "--workers", "2"]
            with step(argv, f"phantoms (brain-mri {name})"):
                write_phantoms("brain-mri", n, size, seed, raw, workers=2, progress=ws.progress)
        folder = ws.root / "data" / f"mri-{name}-{size}"
        if not (folder / "manifest.csv").is_file():
            argv = ["preprocess", str(raw), str(folder), "--modality", "mri", "--size", str(size), "--workers", "2"]
            with step(argv, f"preprocess (brain-mri {name})"):
                preprocess_folder(raw, folder, PreprocessSettings(modality="mri", size=size), workers=2,
                                  progress=ws.progress)
        out.append(folder)
    return out[0], out[1]


def _volume_datasets(ws: Workspace, modality: str, size: int) -> tuple[Path, Path]:
    """Phantoms with their extra volumes (``tissue``; brain: ``t2``), preprocessed at ``size``³ with them."""
    from medgen.data.preprocess import PreprocessSettings, preprocess_folder
    from medgen.experiments.workspace import write_phantoms

    kind = "thorax-ct" if modality == "ct" else "brain-mri"
    s = ws.scale
    out = []
    for name, n, seed in (("train", s.n_train, ws.seed), ("heldout", s.n_heldout, ws.seed + 1)):
        raw = ws.root / "phantoms-volumes" / kind / name
        if not (raw / "manifest.csv").is_file():
            argv = ["phantoms", "--kind", kind, "--n", str(n), "--size", str(size), "--seed", str(seed), "--out",
                    str(raw), "--workers", "2"]
            with step(argv, f"phantoms ({kind} with volumes, {name})"):
                write_phantoms(kind, n, size, seed, raw, workers=2, progress=ws.progress)
        folder = ws.root / "data" / f"{kind}-volumes-{name}-{size}"
        if not (folder / "manifest.csv").is_file():
            argv = ["preprocess", str(raw), str(folder), "--modality", modality, "--size", str(size), "--workers", "2"]
            with step(argv, f"preprocess ({kind} with volumes, {name})"):
                preprocess_folder(raw, folder, PreprocessSettings(modality=modality, size=size), workers=2,
                                  progress=ws.progress)
        out.append(folder)
    return out[0], out[1]


def class_mean_baseline(train: list[dict[str, np.ndarray]], held: list[dict[str, np.ndarray]], source: str,
                        target: str, bins: int = 0) -> list[np.ndarray]:
    """The trivial map from ``source`` to ``target`` fitted on the training pairs: each label's mean target
    (``bins`` 0: ``source`` is a label map) or, for intensities, the mean target in each of ``bins`` equal bins
    of the source over [-1, 1]; bins never seen map to the overall mean."""
    def codes(v: np.ndarray) -> np.ndarray:
        if not bins:
            return np.asarray(v).astype(np.int64)
        return np.clip(((np.asarray(v) + 1.0) / 2.0 * bins).astype(np.int64), 0, bins - 1)

    src = np.concatenate([codes(p[source]).ravel() for p in train])
    tgt = np.concatenate([p[target].ravel() for p in train]).astype(np.float64)
    n = max(int(src.max()) + 1, bins, 1)
    sums, counts = np.bincount(src, tgt, minlength=n), np.bincount(src, minlength=n)
    table = np.where(counts > 0, sums / np.maximum(counts, 1), tgt.mean())
    out = []
    for p in held:
        c = codes(p[source])
        out.append(np.where(c < n, table[np.minimum(c, n - 1)], tgt.mean()).astype(np.float32))
    return out


def trivial_baseline(spec: TaskSpec, train: list[dict[str, np.ndarray]], held: list[dict[str, np.ndarray]],
                     source: str, target: str) -> list[np.ndarray]:
    """The task's trivial method (``spec.trivial``, see :class:`TaskSpec`) on every held-out pair, fitted on the
    training pairs where it needs them."""
    if spec.trivial == "input":
        return [p[source] for p in held]
    if spec.trivial == "mean":
        mean = np.mean([p[target] for p in train], axis=0).astype(np.float32)
        return [mean for _ in held]
    return class_mean_baseline(train, held, source, target, bins=0 if spec.trivial == "labels" else 64)


def anatomy_errors(outputs: list[np.ndarray], targets: list[np.ndarray], window: tuple[float, float]) -> dict[str, float]:
    """Mean relative error (%) of the HU-measured lung and bone fractions of the body, output vs target."""
    from medgen.metrics.anatomy import ct_anatomy

    lo, hi = window
    errs: dict[str, list[float]] = {"lung_fraction": [], "bone_fraction": []}
    for o, t in zip(outputs, targets):
        a = ct_anatomy(lo + (o + 1) / 2 * (hi - lo), (1.0, 1.0, 1.0))
        b = ct_anatomy(lo + (t + 1) / 2 * (hi - lo), (1.0, 1.0, 1.0))
        for k in errs:
            if b[k] > 0:
                errs[k].append(100.0 * abs(a[k] - b[k]) / b[k])
    return {f"{k}_err_pct": float(np.mean(v)) if v else float("nan") for k, v in errs.items()}


def degraded(ws: Workspace, spec: TaskSpec, clean: Path, split: str, size: int, settings: tuple[str, ...] | None = None,
             name: str | None = None) -> Path:
    """``medgen degrade CLEAN WORK/data/NAME --kind K --param ...`` (reused when complete)."""
    from medgen.data.degraded_set import write_degraded_set

    settings = spec.settings if settings is None else settings
    folder = ws.root / "data" / (name or f"{spec.task}-{split}-{size}")
    argv = ["degrade", str(clean), str(folder), "--kind", spec.kind, *[a for s in settings for a in ("--param", s)],
            "--seed", str(ws.seed + (0 if split == "train" else 1))]
    with step(argv, f"degrade ({spec.task}, {split})"):
        write_degraded_set(clean, folder, spec.kind, list(settings), seed=ws.seed + (0 if split == "train" else 1),
                           progress=ws.progress)
    return folder


def load_pairs(folder: Path, names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """Every subject's volumes ``names`` of a paired data set (intensities float32, label maps int64)."""
    from medgen.data.dataset import load_manifest, load_preprocess_info, volume_column, volume_kinds

    kinds = volume_kinds(load_preprocess_info(folder))
    pairs = []
    for row in load_manifest(folder):
        item = {"id": row["id"]}
        for n in names:
            v = np.load(folder / row[volume_column(n)])
            item[n] = v.astype(np.int64) if kinds.get(n) == "label" else v.astype(np.float32)
        pairs.append(item)
    return pairs


def score(outputs: list[np.ndarray], targets: list[np.ndarray], masks: list[np.ndarray] | None,
          window: tuple[float, float] | None) -> dict[str, Any]:
    """The region-wise paired metrics (:mod:`medgen.metrics.paired_regions`) per volume, averaged; PSNR and
    SSIM with their std over volumes."""
    from medgen.metrics.paired_regions import region_metrics, summarise

    per = [region_metrics(o, t, window, None if masks is None else m)
           for o, t, m in zip(outputs, targets, masks or [None] * len(outputs))]
    s = summarise(per)
    row = {k: v["value"] for k, v in s.items()}
    row.update(psnr_std=s["psnr"]["std"], ssim_std=s["ssim"]["std"], n=len(outputs))
    return row


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.core.errors import UsageError
    from medgen.core.volume import ct_window
    from medgen.data.dataset import load_preprocess_info
    from medgen.families import registry
    from medgen.viz.pairs import save_pair_figure

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASK_SPECS]
    if unknown or not tasks:
        raise UsageError(f"--tasks {args.tasks}: choose among {', '.join(TASK_SPECS)}")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if not families or any(f not in FAMILIES for f in families):
        raise UsageError(f"--families {args.families}: choose among {', '.join(FAMILIES)}")
    if not ws.uses_phantoms:
        raise UsageError("image2image runs on the built-in phantoms (it simulates its pairs); --data is not used")
    size = ws.scale.small_size
    preset = "tiny" if ws.scale.name == "smoke" else "small"
    rows: list[dict[str, Any]] = []
    for task in tasks:
        spec = TASK_SPECS[task]
        if spec.kind is None:
            clean_train, clean_held = _volume_datasets(ws, spec.modality, size)
            train_dir, held_dir = clean_train, clean_held
        else:
            clean_train, clean_held = ws.datasets(size) if spec.modality == "ct" else _mri_datasets(ws, size)
            train_dir = degraded(ws, spec, clean_train, "train", size)
            held_dir = degraded(ws, spec, clean_held, "heldout", size)
        window = ct_window(load_preprocess_info(clean_held)) if spec.modality == "ct" else None
        pairs = None
        methods: list[tuple[str, list[np.ndarray]]] = []
        model_rows = []
        shown: list[tuple[str, np.ndarray]] = []
        for family in families:
            run_dir = ws.model(f"{family}-{task}-{size}", size, family=family, preset=preset, data=train_dir,
                               model_settings={"task": task})
            model = registry.load(run_dir, device=ws.torch_device())
            inputs, target = model.config.inputs, model.config.target
            if pairs is None:
                pairs = load_pairs(held_dir, (target, *inputs))
                targets = [p[target] for p in pairs]
                masks = [p["mask"].astype(bool) for p in pairs] if "mask" in inputs else None
                train_pairs = [] if spec.trivial == "input" else load_pairs(train_dir, (target, *inputs))
                methods = [(spec.baseline, trivial_baseline(spec, train_pairs, pairs, inputs[0], target))]
                if task == "sr":
                    linear_dir = degraded(ws, spec, clean_held, "heldout", size,
                                          settings=spec.settings + ("upsample=linear",), name=f"{task}-linear-heldout-{size}")
                    methods.append(("linear interpolation",
                                    [p["degraded"] for p in load_pairs(linear_dir, ("degraded",))]))
            outputs = [model.translate({n: p[n].astype(np.float32) for n in inputs}) for p in pairs]
            model_rows.append({"task": task, "method": f"{family} ({preset})", **score(outputs, targets, masks, window)})
            if task == "seg2image":
                model_rows[-1].update(anatomy_errors(outputs, targets, window))
            shown.append((family, outputs[0]))
        task_rows = [{"task": task, "method": m, **score(vols, targets, masks, window)} for m, vols in methods]
        if task == "seg2image":
            for row, (_, vols) in zip(task_rows, methods):
                row.update(anatomy_errors(vols, targets, window))
        best = max(r["psnr"] for r in task_rows)
        for row in model_rows:
            row["gain_db"] = row["psnr"] - best
        rows += task_rows + model_rows
        figure = save_pair_figure(out.path(f"image2image-{task}.png"), [(m, vols[0]) for m, vols in methods] + shown,
                                  targets[0], f"{task}: held-out {pairs[0]['id']}", error_of=len(methods))
        out.add_figure(figure)
    notes = [
        (f"{size}³ phantoms ({ws.scale.n_train} training, {ws.scale.n_heldout} held-out subjects per task); preset "
         f"{preset!r} ({', '.join(families)}), batch {ws.scale.batch}, {ws.train_iters} iterations, EMA weights; unet: "
         "L1 loss; pix2pix: the same generator with a PatchGAN discriminator (LSGAN) + 100·L1. The error map is the "
         "first model's."),
        *[f"{t}: `medgen degrade --kind {TASK_SPECS[t].kind} "
          f"{' '.join('--param ' + s for s in TASK_SPECS[t].settings)}`." for t in tasks if TASK_SPECS[t].kind],
        *(["seg2image: the thorax phantoms' tissue label map → the CT (classes as one float channel); baseline: each "
           "class's mean training intensity; lung/bone_fraction_err_pct: relative error of the HU-measured lung and "
           "bone fractions of the body (the target: ≤ 10 %)."] if "seg2image" in tasks else []),
        *(["translate: brain phantoms' T1 → T2 of the same anatomy (true pairs); baseline: a lookup of the mean "
           "training T2 in 64 bins of T1 intensity."] if "translate" in tasks else []),
        *(["inpaint/outpaint: the models output the input wherever the mask is 0 and generate only the masked "
           "voxels (keep_known), so their whole-volume and in-mask errors differ only inside the mask."]
          if {"inpaint", "outpaint"} & set(tasks) else []),
        *(["xray2ct: the PA and lateral DRRs, each broadcast along its rays, → the CT; baseline: the voxel-wise mean "
           "of the training CTs."] if "xray2ct" in tasks else []),
        "psnr: dB over the whole volume in [-1, 1] (data range 2); psnr_body: over the body (CT: HU > -500, "
        "holes filled; MRI: the head foreground); ssim: 3D, Gaussian window 11 (σ 1.5); nmse: ||output − target||² / "
        "||target||²; hu_mae_*: mean |output − target| in HU inside the target's body, lungs and bone (> +300 HU); "
        "mae_mask: mean |output − target| in [-1, 1] units inside the hidden region.",
        "gain_db: the model's PSNR minus the best baseline's (target: ≥ 2 dB for sr, denoise, kspace).",
    ]
    out.write_table(rows, COLUMNS, title=f"Image-to-image tasks at {size}³: {' and '.join(families)} vs trivial baselines",
                    notes=notes)
    return {"size": size, "rows": rows}
