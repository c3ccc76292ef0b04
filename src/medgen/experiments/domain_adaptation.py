"""``medgen experiment domain-adaptation``: a segmenter trained on a labelled domain made to work on an unlabelled one.

The CyCADA recipe (Hoffman et al., "CyCADA: Cycle-Consistent Adversarial Domain Adaptation", ICML 2018) at
the pixel level: a CycleGAN (Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017) learns to translate domain A into domain B's style from unpaired volumes,
and a ``seg-unet`` trained on A's volumes translated into B, with A's labels, is applied to B. CyCADA's
feature-level discriminator and semantic-consistency loss are not built: this is its image-level half
(also called "free annotation" by translation). The phantoms know the truth in B, so every step is measured.

At the scale's small size (demo: 32³), for ``--kind brain-mri`` (default; A = T1, B = T2 of the same
anatomy: a strong shift) or ``thorax-ct`` (B = a second scanner: smoother kernel, thicker slices, a HU
offset, its own noise), through the workspace:

1. phantom sets (``medgen phantoms --domain``, then ``medgen preprocess``, carrying ``tissue``): A-train
   (seed s, domain A, with labels), B-train (seed s+1, domain B: other subjects; its labels are used by the
   oracle only), held-out (seed s+2, ``--domain both``: the A image and its B rendering ``domain_b`` with the
   subjects' ``tissue``);
2. ``medgen unpair A-train B-train`` and a ``cyclegan`` trained on it (preset tiny at smoke, small otherwise;
   the family's defaults: Adam 2e-4 throughout, λ_cycle 10, λ_id 5, image pools of 50);
3. ``medgen translate`` of A-train with G_AB, and the "translated" training set: a copy of A-train with the
   volume ``translated`` (:func:`medgen.data.dataset.add_volume`) beside A's ``tissue``;
4. three ``seg-unet`` s of one preset and length, each trained once per seed: source-only (A images, A labels),
   adapted (``--inputs translated``, A labels), oracle (B images, B labels), each applied to the held-out
   B renderings (``domain_b``) and scored against ``tissue`` (Dice and HD95 per structure,
   :mod:`medgen.metrics.overlap`); source-only also on the held-out A images, for reference;
5. translation accuracy on the held-out pairs (A → B against the true ``domain_b``; PSNR, SSIM,
   :mod:`medgen.metrics.paired_regions`): identity (the A image itself), histogram matching
   (``skimage.exposure.match_histograms`` of each held-out A volume to the pooled voxels of every B-train
   image) and the CycleGAN's G_AB.

Iterations: the CycleGAN trains ``--iters`` (default the scale's: demo 2000, as every experiment's models), each
seg-unet ``--seg-iters`` (default 30 % of the CycleGAN's: demo 600; a segmenter at 32³ converges much sooner
than a GAN), once per training seed (``--seeds``, default 2 at demo, 1 at smoke, the scale's otherwise). At demo
scale that is about 30–40 minutes on 2 idle CPU cores, two thirds of it the CycleGAN (about 0.6–0.8 s an
iteration, a seg-unet 0.08–0.1 s).

Writes ``domain-adaptation.csv``/``.md`` (per method and structure: Dice and HD95, mean ± std over seeds; the
mean over structures; the recovered fraction (adapted − source-only) / (oracle − source-only) of the mean
Dice), ``domain-adaptation-volumes.csv`` (every held-out volume, seed and method), ``translation.csv``/``.md``
(identity, histogram matching, CycleGAN; PSNR, SSIM) with ``translation-volumes.csv``, and the figures
``domain-adaptation.png`` (A | histogram matched | CycleGAN A → B | the true B, with the CycleGAN's error) and
``domain-adaptation-segmentation.png`` (each model's labels of a held-out B rendering | the true labels).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medgen.experiments.workspace import ExperimentOutput, Workspace, phantom_dataset, step

HELP = "domain adaptation by translation (CyCADA's pixel level): seg-unet trained on CycleGAN-translated A, scored on B"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
KINDS = ("brain-mri", "thorax-ct")
DEFAULTS = {"kind": "brain-mri"}
#: What each kind's two domains are (for the tables).
DOMAIN_NAMES = {"brain-mri": ("T1", "T2"), "thorax-ct": ("scanner 1", "scanner 2")}
#: Each seg-unet's iterations as a share of the CycleGAN's (``--iters``) when ``--seg-iters`` is not given.
SEG_SHARE = 0.3
#: Seg-unet training seeds per scale when ``--seeds`` is not given (other scales: the scale's ``seeds``).
SEEDS = {"smoke": 1, "demo": 2}
#: The three segmenters (each scored on the held-out B renderings; source-only also on the A images).
METHODS = ("source-only", "adapted", "oracle")
VOLUME = "translated"
COLUMNS = ("method", "domain", "label", "structure", "dice", "dice_std", "hd95", "hd95_std", "missed_pct",
           "recovered_fraction", "seeds", "n")
TRANSLATION_COLUMNS = ("method", "psnr", "psnr_std", "psnr_body", "ssim", "ssim_std", "nmse", "hu_mae_body",
                       "gain_db", "n")
IDENTITY, HISTOGRAM, CYCLEGAN = "identity (A image)", "histogram matching", "cyclegan G_AB"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", default=DEFAULTS["kind"], metavar="KIND",
                   help=f"phantoms: {' or '.join(KINDS)} (default brain-mri: A = T1, B = T2; thorax-ct: two CT "
                        "scanners)")
    p.add_argument("--seg-iters", type=int, default=None, metavar="N",
                   help=f"training iterations of each seg-unet (default {100 * SEG_SHARE:g} %% of the CycleGAN's "
                        "--iters, at least 1: demo 600)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seg-unet training seeds, each segmenter trained once per seed (default: demo 2, smoke 1, "
                        "full the scale's)")


def plan(ws: Workspace, args: argparse.Namespace) -> tuple[int, int, int]:
    """(CycleGAN iterations, seg-unet iterations, seeds): :attr:`Workspace.train_iters` (``--iters`` or the scale's),
    ``--seg-iters`` (default :data:`SEG_SHARE` of the CycleGAN's, at least 1), ``--seeds`` (default :data:`SEEDS`)."""
    from medgen.core.errors import UsageError

    gan = ws.train_iters
    if args.seg_iters is not None and args.seg_iters < 1:
        raise UsageError(f"--seg-iters {args.seg_iters}: need at least 1")
    seg = args.seg_iters or max(1, round(SEG_SHARE * gan))
    seeds = args.seeds if args.seeds is not None else SEEDS.get(ws.scale.name, ws.scale.seeds)
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: need at least 1")
    return gan, seg, seeds


def _data_sets(ws: Workspace, kind: str, size: int) -> dict[str, Path]:
    """A-train, B-train and the held-out pairs (see the module docstring), preprocessed at ``size``³."""
    s = ws.scale
    specs = {"a": ("A", s.n_train, ws.seed), "b": ("B", s.n_train, ws.seed + 1),
             "held": ("both", s.n_heldout, ws.seed + 2)}
    out = {}
    for key, (domain, n, seed) in specs.items():
        name = f"{kind}-{domain}-seed{seed}-n{n}-{size}"
        out[key] = phantom_dataset(ws, kind, name, n, size, seed, domain)
    return out


def _unpaired(ws: Workspace, a: Path, b: Path) -> Path:
    """``medgen unpair A B WORK/data/...-unpaired`` (reused when written: it appears whole or not at all)."""
    from medgen.data.unpaired_set import write_unpaired_set

    folder = ws.root / "data" / f"{a.name}-unpaired-{b.name}"
    argv = ["unpair", str(a), str(b), str(folder), "--seed", str(ws.seed)] + ([] if ws.progress else ["--no-progress"])
    ws.record(argv)
    if not (folder / "manifest.csv").is_file():
        with step(argv, "unpair"):
            write_unpaired_set(a, b, folder, seed=ws.seed, progress=ws.progress)
    return folder


def translated_set(ws: Workspace, run_dir: Path, source: Path, name: str) -> Path:
    """``WORK/data/NAME``: the data set ``source`` plus the volume ``translated``, its images translated A → B by
    the CycleGAN ``run_dir`` (``medgen translate RUN SOURCE --out WORK/translated/NAME``, whose raw outputs are
    added with :func:`medgen.data.dataset.add_volume`). Rebuilt when the run's checkpoint changed."""
    from medgen.core.fileio import atomic_write_json
    from medgen.data.dataset import add_volume, load_manifest, load_preprocess_info
    from medgen.families import registry
    from medgen.inference.translate import translate_dataset

    model = registry.load(run_dir, device=ws.torch_device())
    record = {"run": str(run_dir), "checkpoint": Path(model.checkpoint).name, "direction": "AtoB",
              "source": str(source)}
    dest = ws.root / "data" / name
    outputs = ws.root / "translated" / name
    if (dest / "manifest.csv").is_file() and load_preprocess_info(dest).get("translated_by") == record:
        ws.record(_translate_argv(ws, run_dir, source, outputs))
        return dest
    if outputs.exists():  # outputs of another checkpoint (translate_dataset would keep them)
        shutil.rmtree(outputs)
    argv = _translate_argv(ws, run_dir, source, outputs)
    ws.record(argv)
    with step(argv, "translate A → B"):
        translate_dataset(model, source, outputs, direction="AtoB", progress=ws.progress)
    tmp = dest.parent / f".{dest.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    for row in load_manifest(tmp):
        add_volume(tmp, VOLUME, row["id"], np.load(outputs / "outputs" / f"{row['id']}.npy"))
    info = load_preprocess_info(tmp)
    info["translated_by"] = record
    atomic_write_json(tmp / "preprocess.json", info)
    (tmp / ".volumes.lock").unlink(missing_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    print(f"wrote {dest}: {source.name} with the volume {VOLUME!r} (G_AB of its images)", flush=True)
    return dest


def _translate_argv(ws: Workspace, run_dir: Path, source: Path, outputs: Path) -> list[str]:
    return ["translate", str(run_dir), str(source), "--out", str(outputs), "--direction", "AtoB",
            "--device", ws.device] + ([] if ws.progress else ["--no-progress"])


def histogram_matched(images: list[np.ndarray], reference: list[np.ndarray]) -> list[np.ndarray]:
    """Each of ``images`` histogram-matched (``skimage.exposure.match_histograms``, all voxels) to the voxels of
    every ``reference`` volume pooled into one histogram."""
    from skimage.exposure import match_histograms

    pooled = np.concatenate([np.asarray(r, dtype=np.float32) for r in reference], axis=0)
    return [match_histograms(np.asarray(x, dtype=np.float32), pooled).astype(np.float32) for x in images]


def structure_names(info: dict[str, Any], label_volume: str = "tissue") -> dict[int, str]:
    """Label → short name (the class description up to its first parenthesis) from ``preprocess.json``."""
    classes = ((info.get("volumes") or {}).get(label_volume) or {}).get("classes") or {}
    return {int(k): str(v).split(" (")[0] for k, v in classes.items()}


def overlap_rows(preds: list[np.ndarray], refs: list[np.ndarray], ids: list[str], spacings: list[tuple],
                 labels: list[int]) -> list[dict[str, Any]]:
    """Per held-out volume: :func:`medgen.metrics.overlap.label_metrics` of the prediction against the truth."""
    from medgen.metrics.overlap import label_metrics

    return [{"id": i, **label_metrics(p, r, labels, sp)} for p, r, i, sp in zip(preds, refs, ids, spacings)]


def summarise_seeds(per_seed: list[list[dict[str, Any]]], labels: list[int]) -> dict[int | str, dict[str, Any]]:
    """Per structure (and ``"mean"``): Dice and HD95 over the seeds (mean, and std with ddof 1; None for one seed).

    Per seed, a structure's Dice is the mean over held-out volumes (those where it is in the prediction or the
    truth), its HD95 the mean over the volumes where it is in both (``missed_pct``: % of the volumes × seeds where
    it is in only one, HD95 infinite); the ``mean`` row averages the structures per seed, then over seeds."""
    def mean_std(values: list[float]) -> tuple[float, float | None]:
        v = np.asarray(values, dtype=np.float64)
        if np.isnan(v).all():
            return math.nan, None
        return float(np.nanmean(v)), (float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else None)

    out: dict[int | str, dict[str, Any]] = {}
    dice_by_seed = np.full((len(per_seed), len(labels)), np.nan)
    hd_by_seed = np.full((len(per_seed), len(labels)), np.nan)
    for j, k in enumerate(labels):
        missed = total = 0
        for s, rows in enumerate(per_seed):
            dice = np.array([r[f"dice_{k}"] for r in rows], dtype=np.float64)
            hd = np.array([r[f"hd95_{k}"] for r in rows], dtype=np.float64)
            present = ~np.isnan(dice)
            missed += int(np.isinf(hd).sum())
            total += int(present.sum())
            if present.any():
                dice_by_seed[s, j] = dice[present].mean()
            if np.isfinite(hd).any():
                hd_by_seed[s, j] = hd[np.isfinite(hd)].mean()
        d, d_std = mean_std(list(dice_by_seed[:, j]))
        h, h_std = mean_std(list(hd_by_seed[:, j]))
        out[k] = {"dice": d, "dice_std": d_std, "hd95": h, "hd95_std": h_std,
                  "missed_pct": 100.0 * missed / total if total else math.nan}
    with warnings.catch_warnings():  # a seed with no structure scored: NaN, said once by mean_std
        warnings.simplefilter("ignore", RuntimeWarning)
        d, d_std = mean_std(list(np.nanmean(dice_by_seed, axis=1)))
        h, h_std = mean_std(list(np.nanmean(hd_by_seed, axis=1)))
    out["mean"] = {"dice": d, "dice_std": d_std, "hd95": h, "hd95_std": h_std,
                   "missed_pct": float(np.nanmean([out[k]["missed_pct"] for k in labels])) if labels else math.nan}
    return out


def recovered_fraction(source: float, adapted: float, oracle: float) -> float:
    """(adapted − source-only) / (oracle − source-only): 0 = no gain, 1 = the oracle's (NaN when the two are equal;
    meaningful only when the oracle beats source-only)."""
    gap = oracle - source
    return (adapted - source) / gap if gap != 0 else math.nan


def _labels_figure(v: np.ndarray, k: int) -> np.ndarray:
    """A label map on the figures' [-1, 1] grey scale (class 0 black, class K−1 white)."""
    return (np.asarray(v, dtype=np.float32) / max(k - 1, 1)) * 2.0 - 1.0


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.core.errors import UsageError
    from medgen.core.tables import write_csv
    from medgen.core.volume import ct_window, parse_spacing
    from medgen.data.dataset import load_manifest, load_preprocess_info
    from medgen.experiments.image2image import load_pairs
    from medgen.families import registry
    from medgen.metrics.overlap import labels_of
    from medgen.metrics.paired_regions import region_metrics, summarise
    from medgen.viz.pairs import save_pair_figure

    kind = args.kind
    if kind not in KINDS:
        raise UsageError(f"--kind {kind}: choose {' or '.join(KINDS)}")
    if not ws.uses_phantoms:
        raise UsageError("domain-adaptation runs on the built-in phantoms (they hold the truth in domain B); "
                         "--data is not used")
    if args.run is not None:
        raise UsageError("domain-adaptation trains its own CycleGAN and seg-unets; --run is not used")
    gan_iters, seg_iters, n_seeds = plan(ws, args)
    size = ws.scale.small_size
    preset = "tiny" if ws.scale.name == "smoke" else "small"
    name_a, name_b = DOMAIN_NAMES[kind]
    ws.log.clear()

    # ---- data, the CycleGAN, the translated training set
    sets = _data_sets(ws, kind, size)
    unpaired = _unpaired(ws, sets["a"], sets["b"])
    prefix = f"da-{kind}-{size}" + (f"-s{ws.seed}" if ws.seed else "")
    gan_run = ws.model(f"{prefix}-cyclegan", size, family="cyclegan", preset=preset, data=unpaired, iters=gan_iters)
    translated = translated_set(ws, gan_run, sets["a"], f"{sets['a'].name}-{VOLUME}-g{gan_iters}")

    # ---- the segmenters
    seeds = [ws.seed + i for i in range(n_seeds)]
    train_data = {"source-only": (sets["a"], None), "adapted": (translated, VOLUME), "oracle": (sets["b"], None)}
    runs: dict[str, list[Path]] = {m: [] for m in METHODS}
    for seed in seeds:
        for method in METHODS:
            data, inputs = train_data[method]
            tag = f"{method}-g{gan_iters}" if method == "adapted" else method
            runs[method].append(ws.model(f"{prefix}-seg-{tag}-seed{seed}", size, family="seg-unet", preset=preset,
                                         data=data, iters=seg_iters, seed=seed,
                                         model_settings={"inputs": inputs} if inputs else None))

    # ---- held-out evaluation: every segmenter on the B renderings, source-only also on the A images
    held = load_pairs(sets["held"], ("image", "domain_b", "tissue"))
    info = load_preprocess_info(sets["held"])
    ids = [p["id"] for p in held]
    spacings = [parse_spacing(r.get("spacing", "")) or (1.0, 1.0, 1.0) for r in load_manifest(sets["held"])]
    refs = [p["tissue"] for p in held]
    labels = labels_of(*refs)
    names = structure_names(info)
    num_classes = max(names) + 1 if names else max(labels) + 1
    evaluations = [(m, "B", "domain_b") for m in METHODS] + [("source-only", "A", "image")]
    print(f"\nheld-out evaluation: {len(held)} subjects of {sets['held']}, structures {labels}", flush=True)
    volume_rows: list[dict[str, Any]] = []
    summaries: dict[tuple[str, str], dict] = {}
    shown_labels: dict[str, np.ndarray] = {}
    for method, domain, volume in evaluations:
        per_seed = []
        for seed, run_dir in zip(seeds, runs[method]):
            model = registry.load(run_dir, device=ws.torch_device())
            preds = [model.segment(p[volume]) for p in held]
            rows = overlap_rows(preds, refs, ids, spacings, labels)
            per_seed.append(rows)
            volume_rows += [{"method": method, "domain": domain, "seed": seed, **r} for r in rows]
            if domain == "B" and seed == seeds[0]:
                shown_labels[method] = preds[0]
        summaries[(method, domain)] = summarise_seeds(per_seed, labels)
    means = {m: summaries[(m, "B")]["mean"]["dice"] for m in METHODS}
    recovered = recovered_fraction(means["source-only"], means["adapted"], means["oracle"])
    table = []
    for method, domain, _ in evaluations:
        s = summaries[(method, domain)]
        for k in [*labels, "mean"]:
            row = {"method": method, "domain": f"{domain} ({name_a if domain == 'A' else name_b})",
                   "label": "" if k == "mean" else k, "structure": "mean" if k == "mean" else names.get(k, str(k)),
                   **s[k], "seeds": len(seeds), "n": len(held)}
            if k == "mean" and method == "adapted" and domain == "B":
                row["recovered_fraction"] = recovered
            table.append(row)

    label_cols = [f"{m}_{k}" for k in labels for m in ("dice", "hd95")]
    write_csv(out.path("domain-adaptation-volumes.csv"), volume_rows,
              ["method", "domain", "seed", "id", *label_cols, "dice_mean", "hd95_mean"])

    # ---- translation accuracy on the held-out pairs
    window = ct_window(info) if kind == "thorax-ct" else None
    b_train = [p["image"] for p in load_pairs(sets["b"], ("image",))]
    gan = registry.load(gan_run, device=ws.torch_device())
    sources, targets = [p["image"] for p in held], [p["domain_b"] for p in held]
    outputs = {IDENTITY: sources, HISTOGRAM: histogram_matched(sources, b_train),
               CYCLEGAN: [gan.translate(x) for x in sources]}
    translation_rows, translation_volume_rows = [], []
    for method, vols in outputs.items():
        per = [region_metrics(o, t, window) for o, t in zip(vols, targets)]
        translation_volume_rows += [{"method": method, "id": i, **r} for i, r in zip(ids, per)]
        s = summarise(per)
        translation_rows.append({"method": method, **{k: v["value"] for k, v in s.items()},
                                 "psnr_std": s["psnr"]["std"], "ssim_std": s["ssim"]["std"], "n": len(per)})
    reference = next(r["psnr"] for r in translation_rows if r["method"] == HISTOGRAM)
    for row in translation_rows:
        row["gain_db"] = row["psnr"] - reference
    write_csv(out.path("translation-volumes.csv"), translation_volume_rows,
              ["method", "id", "psnr", "psnr_body", "ssim", "ssim_body", "nmse"]
              + (["hu_mae_body", "hu_mae_lung", "hu_mae_bone"] if window else []))

    # ---- figures: the first held-out subject
    first = held[0]["id"]
    out.add_figure(save_pair_figure(
        out.path("domain-adaptation.png"),
        [(f"source A ({name_a})", sources[0]), ("histogram matched", outputs[HISTOGRAM][0]),
         ("CycleGAN A→B", outputs[CYCLEGAN][0])],
        targets[0], f"{kind}: held-out {first}, A → B (target: its true B rendering, {name_b})", error_of=2))
    out.add_figure(save_pair_figure(
        out.path("domain-adaptation-segmentation.png"),
        [(f"{m} (seed {seeds[0]})", _labels_figure(shown_labels[m], num_classes)) for m in METHODS],
        _labels_figure(refs[0], num_classes),
        f"{kind}: labels of held-out {first}'s B rendering ({name_b}); target: the true tissue map", error_of=1,
        error_max=2.0 / max(num_classes - 1, 1)))

    # ---- tables
    n_a = ws.scale.n_train
    common = (f"{kind} phantoms at {size}³: A-train {n_a} subjects (seed {ws.seed}, domain A: {name_a}), B-train "
              f"{n_a} other subjects (seed {ws.seed + 1}, domain B: {name_b}; labels used by the oracle only), "
              f"held-out {ws.scale.n_heldout} subjects (seed {ws.seed + 2}) rendered in both domains. "
              f"Scale {ws.scale.name}.")
    commands = [f"`{c}`" for c in ws.log]
    notes = [
        common,
        (f"CycleGAN: preset {preset!r}, {gan_iters} iterations, batch {ws.scale.batch}, whole {size}³ volumes, "
         "LSGAN + 10·cycle L1 + 5·identity L1, Adam 2e-4, image pools of 50, the last checkpoint's generators (no "
         "EMA); no feature-level discriminator."),
        (f"seg-unet: preset {preset!r}, {seg_iters} iterations, batch {ws.scale.batch}, Dice + cross-entropy, EMA "
         f"weights, training seeds {', '.join(map(str, seeds))}. source-only: A images + A labels; adapted: A "
         f"images translated by G_AB (volume {VOLUME!r}) + A labels; oracle: B images + B labels (the upper bound). "
         f"The translated training set ({translated.name}) is A-train plus the volume {VOLUME!r}: the raw outputs "
         "of the `medgen translate` below (OUT/outputs/ID.npy), added with medgen.data.dataset.add_volume."),
        ("dice: per structure, the mean over held-out volumes (where the structure is in the prediction or the "
         "truth) per seed, then mean ± std (ddof 1) over seeds; mean: the mean over the structures. hd95: 95 % "
         "Hausdorff distance in mm, mean over the volumes where the structure is in both maps; missed_pct: % of "
         "volumes × seeds where it is in only one (HD95 infinite)."),
        (f"recovered_fraction (adapted row): (adapted − source-only) / (oracle − source-only) of the mean Dice "
         f"on B = {recovered:.3f} (target ≥ 0.5; meaningful when the oracle beats source-only)."),
        "The commands, in order (the scoring is this experiment's own, on the held-out set's domain_b and tissue "
        "volumes):",
        *commands,
    ]
    out.write_table(table, COLUMNS, notes=notes,
                    title=f"Domain adaptation {name_a} → {name_b} ({kind}, {size}³): seg-unet Dice on held-out "
                          "domain-B renderings")
    units = ("the CT window" if window else "each MRI volume normalised by its own "
             + "/".join(f"{v:g}" for v in info.get("percentiles", (0.5, 99.5))) + " percentiles")
    t_notes = [
        common,
        (f"Held-out pairs: each subject's A image translated into B, compared with its true B rendering "
         f"(domain_b), in the preprocessed [-1, 1] units ({units})."),
        f"{IDENTITY}: the A image itself. {HISTOGRAM}: skimage.exposure.match_histograms of each held-out A volume "
        f"(all {size}³ voxels) to one reference histogram: the voxels of all {n_a} B-train images (preprocessed) "
        "pooled; no held-out B volume is used. "
        f"{CYCLEGAN}: the CycleGAN's A → B generator ({gan_iters} iterations).",
        "psnr: dB over the volume (data range 2); psnr_body: over the target's body/foreground; ssim: 3D, Gaussian "
        "window 11 (σ 1.5); nmse: ||output − target||² / ||target||²"
        + ("; hu_mae_body: mean |error| in HU inside the body" if window else "") + ".",
        "gain_db: PSNR minus histogram matching's (target: > 0 for the CycleGAN).",
    ]
    columns = [c for c in TRANSLATION_COLUMNS if window or c != "hu_mae_body"]
    out.write_table(translation_rows, columns, notes=t_notes, stem="translation",
                    title=f"Translation {name_a} → {name_b} on held-out pairs ({kind}, {size}³)")
    return {"kind": kind, "size": size, "preset": preset, "gan_iters": gan_iters, "seg_iters": seg_iters,
            "seeds": seeds, "mean_dice": {**{f"{m} (B)": means[m] for m in METHODS},
                                          "source-only (A)": summaries[("source-only", "A")]["mean"]["dice"]},
            "recovered_fraction": None if math.isnan(recovered) else recovered,
            "translation_psnr": {r["method"]: r["psnr"] for r in translation_rows}, "commands": list(ws.log)}
