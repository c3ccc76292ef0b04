"""``medgen experiment recipes``: what each of medgen's departures from the paper's HA-GAN recipe does.

Trains HA-GAN at the scale's small size (demo: 32³ phantoms) with the paper's
recipe, with each remedy alone and with medgen's defaults (all of them), each
for ``--seeds`` training seeds, and measures what the issue of mode collapse and
train/inference mismatch is about:

* ``paper``: the paper's method (``--recipe paper``): the training slab is
  zero-padded, D has no minibatch standard deviation;
* ``+ slab context``: G^H trained on the slab with its real neighbours and the
  whole volume's GroupNorm statistics (``--slab-context exact``), so D^H judges
  exactly the slices inference produces;
* ``+ minibatch std``: a minibatch standard-deviation feature in D^H and D^L
  (``--minibatch-std 4``), real and generated volumes in separate groups;
* ``medgen's method``: both (``medgen train`` without options);

each in the ``tiny`` preset, then the paper's method and medgen's in the
``compact`` preset (twice the width: G^H gets 8 instead of 4 hidden channels),
which is what lets the generator draw the lung texture, and medgen's with D also
given the intensity distribution of what it judges (``--histogram-bins 64``) or
its input seen through CT's lung window as a second channel (``--d-windows lung``).

Every run is sampled (the EMA generator) and compared with the held-out phantoms:
MS-SSIM among generated pairs (diversity; compare with the real pairs'),
precision/recall/coverage, Wasserstein-1 of lung fraction, emphysema % and bone
fraction, FID/MMD on seeded random features, and the train/inference gap
(:func:`medgen.families.hagan.consistency.train_inference_gap`).

With ``--conditional`` the same is done for the class-conditional model on the
phantoms' emphysema classes: the paper's recipe (one class loss on the heads'
mean logits, λ 0.1), medgen's method, with a class loss per head, that with
λ 1, with the real batch's classes asked of G, with a projection discriminator
(tiny preset), and medgen's method in the compact preset, on the scale's
phantoms and on 8 times as many, and on those with the class learnt by a
separate classifier C instead of D's class heads (``--class-conditioning
classifier``, λ 0.3, one class loss per head), also with D and C seeing the lung window,
with C learning from flipped and shifted volumes (once or 4 times per iteration), and that
last recipe at λ 0.2, with the mode-seeking term, with the demo's D (lung and bone windows,
R1) and with all of the demo's settings; per requested class, the generated volumes'
emphysema % (Spearman correlation with the class, class means against the real classes'
interquartile ranges) and the MS-SSIM within each class; and, as the floor of those
numbers, the same measured on real phantoms drawn like the generated volumes (as many
per class, from 8 times the scale's phantoms made with another seed), their within-class
MS-SSIM included.

Writes ``recipes.csv``/``recipes.md`` (a row per run and a mean row per
variant), ``recipes-conditional.csv`` with ``--conditional``, ``recipes.png``
(mid-slices of a few samples of every variant, first seed) and every evaluation
JSON. ``--only KEY,KEY`` runs only the variants of those keys and replaces their
rows in the tables already in the folder, keeping the other rows (and the figure)
as they are; the tables then list every command that made their rows.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medgen.experiments.guidance import LABEL_COLUMN  # the phantoms' emphysema classes
from medgen.experiments.workspace import METRIC_COLUMNS, METRIC_NOTES, ExperimentOutput, Workspace, metric_row

HELP = ("HA-GAN: the paper's recipe vs slab context, minibatch std, width and class-conditioning options "
        "(mode collapse, anatomy, classes)")
DESCRIPTION = __doc__.split("\n\n", 1)[1]
DEFAULTS = {"seeds": 2, "conditional": False, "per_class": 8, "only": None}  # left out of the canonical command line

FIGURE_VOLUMES = 4


@dataclass(frozen=True)
class Variant:
    """One recipe: ``recipe`` (None = medgen's defaults), more architecture settings and training settings;
    ``preset``: the model preset (None = the scale's)."""

    key: str
    label: str
    recipe: str | None
    model: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    preset: str | None = None
    more_phantoms: int = 1  # training phantoms: this many times the scale's

    @property
    def options(self) -> str:
        from medgen.families.run_config import train_flags

        flags = (["--preset", self.preset] if self.preset else []) + (["--recipe", self.recipe] if self.recipe else [])
        flags += train_flags({**self.model, **self.hparams})
        return " ".join(flags) or "no options"


# The method's rows use the "tiny" preset, each remedy alone; the "compact" rows (twice tiny's width)
# show what the width adds.
VARIANTS: tuple[Variant, ...] = (
    Variant("paper", "paper, tiny", "paper", preset="tiny",
            note="the paper's method: zero-padded training slab, no minibatch std"),
    Variant("context", "+ slab context, tiny", "paper", {"slab_context": "exact"}, preset="tiny",
            note="the paper's, but G^H trained on the slab with its neighbours and whole-volume GroupNorm statistics"),
    Variant("mbstd", "+ minibatch std, tiny", "paper", {"minibatch_std": 4}, preset="tiny",
            note="the paper's, plus a minibatch standard-deviation feature (groups of 4) in D^H and D^L"),
    Variant("default", "medgen's method, tiny", None, preset="tiny",
            note="both remedies (medgen train without options), in the tiny preset"),
    Variant("paper-compact", "paper, compact", "paper", preset="compact",
            note="the paper's method in the compact preset (twice tiny's width)"),
    Variant("default-compact", "medgen's method, compact", None, preset="compact",
            note="both remedies in the compact preset"),
    Variant("histogram-compact", "+ intensity histogram in D, compact", None, {"histogram_bins": 64},
            preset="compact", note="medgen's method in the compact preset, D^H and D^L also given the intensity "
                                   "distribution of what they judge (64 bins)"),
    Variant("lungwindow-compact", "+ lung window in D, compact", None, {"d_windows": "lung"},
            preset="compact", note="medgen's method in the compact preset, D^H and D^L also seeing their input "
                                   "through CT's lung window (-1024...-500 HU) as a second channel"),
    Variant("lungbonewindow-compact", "+ lung and bone windows in D, compact", None, {"d_windows": "lung,bone"},
            preset="compact", note="the same with a third channel, CT's bone window (300...1500 HU)"),
    Variant("lungwindow-r1-compact", "+ lung window and R1 in D, compact", None, {"d_windows": "lung"},
            hparams={"r1_gamma": 1.0}, preset="compact",
            note="the lung window with an R1 penalty (γ 1, every 16 iterations) on D's real inputs"),
)

# The classifier recipe with C learning from flipped and shifted volumes, 4 updates per iteration: the
# best on the scale's 64 phantoms, and the base of the variants measured after it.
C4_LABEL = "classifier C on flipped and shifted volumes, 4 updates per iteration"
C4_MODEL: dict[str, Any] = {"class_conditioning": "classifier", "d_windows": "lung"}
C4_HPARAMS: dict[str, Any] = {"class_loss": "per-head", "class_weight": 0.3, "c_augment": True, "c_steps": 4}

CONDITIONAL_VARIANTS: tuple[Variant, ...] = (
    Variant("paper", "paper, tiny", "paper", preset="tiny",
            note="the paper's method: one class loss on the mean of D^H's and D^L's class logits, λ 0.1"),
    Variant("default", "medgen's method, tiny", None, preset="tiny",
            note="slab context and minibatch std; the paper's class loss (mean logits, λ 0.1)"),
    Variant("perhead", "+ per-head class loss, tiny", None, hparams={"class_loss": "per-head"}, preset="tiny",
            note="medgen's method with one class loss per head, so D^H must learn the class itself"),
    Variant("lambda1", "+ per-head, λ 1, tiny", None, hparams={"class_loss": "per-head", "class_weight": 1.0},
            preset="tiny", note="per-head class losses and the generator's class loss weighted 1 instead of 0.1"),
    Variant("fakereal", "+ real-batch classes, tiny", None, hparams={"fake_labels": "real"}, preset="tiny",
            note="medgen's method, G asked for the real batch's classes (the data's class prior; the authors' code)"),
    Variant("projection", "projection D, tiny", None, {"class_conditioning": "projection"}, preset="tiny",
            note="medgen's method with a projection discriminator: D is given the class instead of predicting it"),
    Variant("default-compact", "medgen's method, compact", None, preset="compact",
            note="slab context and minibatch std, the paper's class loss, in the compact preset (twice tiny's width)"),
    Variant("classifier-lungwindow-compact", "classifier C, λ 0.3, lung window, compact", None,
            {"class_conditioning": "classifier", "d_windows": "lung"},
            hparams={"class_loss": "per-head", "class_weight": 0.3}, preset="compact",
            note="D unconditional and seeing the lung window too; a separate classifier C learns the class from "
                 "the real volumes only and G's loss adds 0.3 x its cross-entropy per head; the scale's 64 phantoms"),
    Variant("classifier-lungwindow-caug-compact", "classifier C on flipped and shifted volumes, λ 0.3, lung window, compact",
            None, {"class_conditioning": "classifier", "d_windows": "lung"},
            hparams={"class_loss": "per-head", "class_weight": 0.3, "c_augment": True}, preset="compact",
            note="the same, C learning from real volumes flipped left-right and shifted in the axial plane "
                 "(up to 1/8 of the size), so it cannot learn the 64 volumes' classes by heart"),
    Variant("classifier-lungwindow-caug-c4-compact", f"{C4_LABEL}, λ 0.3, lung window, compact", None,
            C4_MODEL, hparams=C4_HPARAMS, preset="compact",
            note="the same, C updated 4 times per iteration (new slab positions, flips and shifts each time), "
                 "as C alone needs about 12000 updates to learn the class from the augmented volumes"),
    Variant("classifier-lungwindow-caug-c4-lambda0.2-compact", f"{C4_LABEL}, λ 0.2, lung window, compact", None,
            C4_MODEL, hparams={**C4_HPARAMS, "class_weight": 0.2}, preset="compact",
            note="the same with G's class loss weighted 0.2 instead of 0.3, as at 0.3 the extreme classes come out "
                 "more extreme than the real ones"),
    Variant("classifier-lungwindow-caug-c4-ms-compact", f"{C4_LABEL}, λ 0.3, lung window, mode-seeking term, compact",
            None, C4_MODEL, hparams={**C4_HPARAMS, "diversity_weight": 0.3}, preset="compact",
            note="the same (λ 0.3) with the mode-seeking term of MSGAN (weight 0.3, as in the demo) against "
                 "collapse inside a class"),
    Variant("classifier-lungbonewindow-r1-caug-c4-compact", f"{C4_LABEL}, λ 0.3, lung and bone windows, R1, compact",
            None, {**C4_MODEL, "d_windows": "lung,bone"}, hparams={**C4_HPARAMS, "r1_gamma": 1.0}, preset="compact",
            note="the same with the demo's D: CT's bone window (300...1500 HU) as a third channel of D and C, and "
                 "an R1 penalty (γ 1) on D's real inputs"),
    Variant("classifier-demo-caug-c4-compact", f"{C4_LABEL}, λ 0.3, the demo's setting, compact", None,
            {**C4_MODEL, "d_windows": "lung,bone"},
            hparams={**C4_HPARAMS, "r1_gamma": 1.0, "diversity_weight": 0.3, "lr_g": 2e-4}, preset="compact",
            note="the same with all of the demo's settings: also the mode-seeking term (λ 0.3) and G's learning "
                 "rate 2e-4"),
    Variant("n512-compact", "medgen's method, compact, 8x phantoms", None, preset="compact", more_phantoms=8,
            note="the same trained on 8 times as many phantoms (512 instead of 64 at the demo scale), so D cannot "
                 "learn each training volume's class by heart"),
    Variant("classifier-n512-compact", "classifier C, λ 0.3, compact, 8x phantoms", None,
            {"class_conditioning": "classifier"}, hparams={"class_loss": "per-head", "class_weight": 0.3},
            preset="compact", more_phantoms=8,
            note="D unconditional; a separate classifier C (no spectral normalisation) learns the class from the "
                 "real volumes only and G's loss adds 0.3 x its cross-entropy per head; 512 phantoms"),
    Variant("classifier-lungwindow-n512-compact", "classifier C, λ 0.3, lung window, compact, 8x phantoms", None,
            {"class_conditioning": "classifier", "d_windows": "lung"},
            hparams={"class_loss": "per-head", "class_weight": 0.3}, preset="compact", more_phantoms=8,
            note="the same, D and C also seeing their input through CT's lung window (-1024...-500 HU)"),
)

COLUMNS: tuple[str, ...] = ("variant", "seed", "iterations", "gap", "gap_border", *METRIC_COLUMNS)
CONDITIONAL_COLUMNS_HEAD: tuple[str, ...] = ("variant", "seed", "iterations", "spearman")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=2, metavar="N", help="training seeds per variant (default 2)")
    p.add_argument("--conditional", action="store_true",
                   help="also the class-conditional model on the phantoms' emphysema classes")
    p.add_argument("--per-class", type=int, default=8, metavar="N",
                   help="with --conditional: volumes per requested class (default 8)")
    p.add_argument("--only", default=None, metavar="KEY,KEY",
                   help="run only the variants with these keys and replace their rows in the folder's existing "
                        "tables, keeping the others (keys: " + ", ".join(dict.fromkeys(
                            v.key for v in (*VARIANTS, *CONDITIONAL_VARIANTS))) + ")")


def _selected(variants: tuple[Variant, ...], only: set[str] | None) -> tuple[Variant, ...]:
    return variants if only is None else tuple(v for v in variants if v.key in only)


def _only_keys(args: argparse.Namespace) -> set[str] | None:
    """The keys of ``--only`` (None: every variant); UsageError for a key no variant has."""
    from medgen.core.errors import UsageError

    if args.only is None:
        return None
    keys = {k.strip() for k in str(args.only).split(",") if k.strip()}
    known = {v.key for v in (*VARIANTS, *(CONDITIONAL_VARIANTS if args.conditional else ()))}
    unknown = sorted(keys - known)
    conditional_only = [k for k in unknown if k in {v.key for v in CONDITIONAL_VARIANTS}]
    if conditional_only:
        raise UsageError(f"--only {args.only}: {', '.join(conditional_only)} is a class-conditional variant; "
                         "add --conditional")
    if unknown or not keys:
        raise UsageError(f"--only {args.only}: no such variant {', '.join(unknown) or '(empty)'}; "
                         f"keys: {', '.join(sorted(known))}")
    return keys


def _merged(variants: tuple[Variant, ...], fresh: dict[str, list[dict[str, Any]]], csv_path) -> list[dict[str, Any]]:
    """The rows of every variant in table order: the ``fresh`` rows of the variants that ran (by label), the
    rows of the others as ``csv_path`` holds them (numbers read back as floats, empty cells as None)."""
    import csv

    kept: dict[str, list[dict[str, Any]]] = {}
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            table = list(csv.DictReader(fh))
        for r in table:
            kept.setdefault(r["variant"], []).append(
                {k: (None if v == "" else _number(v)) if k != "variant" else v for k, v in r.items()})
    rows: list[dict[str, Any]] = []
    for v in variants:
        rows += fresh.get(v.label, kept.get(v.label, []))
    return rows


def _number(text: str) -> Any:
    try:
        f = float(text)
    except ValueError:
        return text
    return int(f) if f.is_integer() and "." not in text and "e" not in text.lower() else f


def _commands(md_path, command: str, only: set[str] | None) -> str:
    """The commands that made a table's rows: with ``--only``, the ones its ``.md`` lists, then this one."""
    if only is None or not md_path.is_file():
        return command
    lines = md_path.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index("Made by:") + 3  # "Made by:", "", "```"
        end = lines.index("```", start)
    except ValueError:
        return command
    return "\n".join(dict.fromkeys([*lines[start:end], command]))


def gap_of_run(run_dir, n: int, seed: int) -> dict[str, float]:
    """:func:`~medgen.families.hagan.consistency.train_inference_gap` of a run's EMA generator for ``n`` codes."""
    import torch

    from medgen.families import registry
    from medgen.families.hagan.consistency import train_inference_gap

    model = registry.load(run_dir, device=torch.device("cpu"))
    z = torch.from_numpy(model.sample_latents(n, seed=seed))
    labels = torch.arange(n) % model.config.num_classes if model.config.num_classes else None
    return train_inference_gap(model.generator, z, labels)


def _train(ws: Workspace, variant: Variant, name: str, size: int, seed: int, **options: Any):
    """The run ``WORK/runs/NAME`` of ``variant`` for training seed ``seed`` (trained if needed)."""
    data = ws.larger_training_set(size, variant.more_phantoms * ws.scale.n_train) if variant.more_phantoms > 1 else None
    return ws.model(name, size, preset=variant.preset, recipe=variant.recipe, model_settings=variant.model,
                    hparams=variant.hparams, seed=seed, data=data, **options)


def _mean_row(label: str, rows: list[dict[str, Any]], columns) -> dict[str, Any]:
    """The mean over seeds of every numeric column (NaN and None left out)."""
    from medgen.experiments.workspace import seed_statistics

    mean, _ = seed_statistics(rows, [c for c in columns if c not in ("variant", "seed")])
    return {"variant": label, "seed": "mean", **mean}


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.core.errors import UsageError
    from medgen.experiments.ablation import sample_volumes
    from medgen.experiments.workspace import checkpoint_iteration

    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: need at least 1")
    only = _only_keys(args)
    command = out.command
    size = ws.scale.small_size
    _, heldout_dir = ws.datasets(size)
    eval_dir = out.path("evaluations")
    n = ws.scale.n_samples
    fresh: dict[str, list[dict[str, Any]]] = {}
    shown: list[tuple[str, list[np.ndarray]]] = []
    report: dict[str, Any] = {}
    for variant in _selected(VARIANTS, only):
        per_seed = []
        for k in range(args.seeds):
            seed = ws.seed + k
            name = f"recipes-{variant.key}-{size}-seed{seed}"
            run_dir = _train(ws, variant, name, size, seed)
            fake = ws.samples(run_dir, name)
            report = ws.evaluate(heldout_dir, fake, eval_dir / f"{name}.json", metrics="fid,mmd,prdc,ms_ssim,anatomy", n=n)
            gap = gap_of_run(run_dir, min(n, 8), ws.seed)
            row = {"variant": variant.label, "seed": seed, "iterations": checkpoint_iteration(run_dir),
                   "gap": gap["mean"], "gap_border": gap["border"], **metric_row(report)}
            per_seed.append(row)
            if k == 0:
                shown.append((variant.label, sample_volumes(fake, FIGURE_VOLUMES)))
        fresh[variant.label] = per_seed + ([_mean_row(variant.label, per_seed, COLUMNS)] if args.seeds > 1 else [])
    results: dict[str, Any] = {"size": size}
    if fresh or only is None:
        results.update(_unconditional_table(ws, out, args, size, only, command, fresh, shown, report))
    if args.conditional:
        out.command = command
        conditional = _conditional(ws, out, args, size, only)
        if conditional or only is None:
            results["conditional"] = conditional
    out.command = command
    if only is not None:  # experiment.json: the earlier record's results and commands, updated
        import json

        record = out.path("experiment.json")
        earlier = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
        results = {**(earlier.get("results") or {}), **results}
        out.command = "\n".join(dict.fromkeys([*str(earlier.get("command") or "").splitlines(), command]))
    return results


def _unconditional_table(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace, size: int,
                         only: set[str] | None, command: str, fresh: dict[str, list[dict[str, Any]]],
                         shown: list[tuple[str, list[np.ndarray]]], report: dict[str, Any]) -> dict[str, Any]:
    """``recipes.csv``/``.md`` (the fresh rows merged into the folder's table with ``--only``) and the figure."""
    from medgen.experiments.ablation import heldout_volumes, save_ablation_figure

    _, heldout_dir = ws.datasets(size)
    n = ws.scale.n_samples
    rows = _merged(VARIANTS, fresh, out.path("recipes.csv")) if only is not None else \
        [r for v in VARIANTS for r in fresh.get(v.label, [])]
    ms_ssim = report.get("metrics", report).get("ms_ssim") or {}
    real_ms_ssim = ((ms_ssim.get("details") or {}).get("real") or {}).get("mean")
    rows.append({"variant": "real (held-out)", "seed": None, "ms_ssim": real_ms_ssim})

    if only is None:  # the figure shows every variant: kept as it is when only some ran
        real = list(heldout_volumes(heldout_dir, FIGURE_VOLUMES))
        out.add_figure(save_ablation_figure([("real (held-out)", real), *shown], out.path("recipes.png")))
    notes = [
        (f"HA-GAN at {size}³, the preset each row names (tiny: width 1/8, G^H with 4 hidden channels; compact: "
         f"width 1/4, 8), batch {ws.scale.batch}, {ws.train_iters} iterations per run, "
         f"training seeds {ws.seed}..{ws.seed + args.seeds - 1}; {n} samples per run (EMA generator) against "
         f"{n} held-out phantoms at most."),
        *[f"{v.label} ({v.options}): {v.note}." for v in VARIANTS],
        ("gap: mean |training slab - the same slab of the generated volume| in [-1, 1] units (x 812 HU for the "
         "thorax window), same z, every tiling slab position, 8 volumes; gap_border: its first and last slab slices."),
        *METRIC_NOTES,
        "The last row: MS-SSIM among pairs of held-out volumes, the diversity a model should reach.",
    ]
    out.command = _commands(out.path("recipes.md"), command, only)
    out.write_table(rows, COLUMNS, title=f"HA-GAN recipes at {size}³: the paper's vs medgen's", notes=notes)
    return {"rows": rows, "real_ms_ssim": real_ms_ssim}


def _conditional(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace, size: int,
                 only: set[str] | None = None) -> list[dict[str, Any]]:
    """The class-conditional table (``recipes-conditional.csv``/``.md``)."""
    from medgen.core.errors import UsageError
    from medgen.experiments.augmentation import emphysema_percentages
    from medgen.experiments.guidance import real_class_emphysema, spearman
    from medgen.experiments.workspace import checkpoint_iteration
    from medgen.metrics.diversity import ms_ssim_diversity
    from medgen.metrics.volumes import open_volume_set

    if args.per_class < 2:
        raise UsageError(f"--per-class {args.per_class}: need at least 2")
    train_dir, _ = ws.datasets(size)
    real_vs, real_labels, classes, real_emph, real_stats = real_class_emphysema(train_dir, ws.progress)

    fresh: dict[str, list[dict[str, Any]]] = {}
    selected = _selected(CONDITIONAL_VARIANTS, only)
    for variant in selected:
        per_seed = []
        for k in range(args.seeds):
            seed = ws.seed + k
            name = f"recipes-cond-{variant.key}-{size}-seed{seed}"
            run_dir = _train(ws, variant, name, size, seed, label_column=LABEL_COLUMN)
            cls, emph, within = [], [], []
            for c in classes:
                folder = ws.samples(run_dir, f"{name}-class{c}", n=args.per_class, label=c)
                vs = open_volume_set(folder, what="samples")
                vs.inherit(real_vs)
                e = emphysema_percentages(vs, progress=ws.progress, desc=f"emphysema ({variant.key}, class {c})")
                cls += [c] * len(e)
                emph += list(e)
                within.append(float(ms_ssim_diversity(vs, seed=ws.seed)["mean"]))
            cls_a, emph_a = np.array(cls, dtype=np.float64), np.array(emph, dtype=np.float64)
            row: dict[str, Any] = {"variant": variant.label, "seed": seed, "iterations": checkpoint_iteration(run_dir),
                                   "spearman": spearman(cls_a, emph_a)}
            inside = 0
            for c in classes:
                found = emph_a[(cls_a == c) & np.isfinite(emph_a)]  # NaN: no lung found in a volume
                m = float(found.mean()) if found.size else math.nan
                row[f"class{c}_emphysema"] = m
                inside += int(real_stats[c]["q1"] <= m <= real_stats[c]["q3"])
            row["classes_in_real_iqr"] = inside
            row["within_class_ms_ssim"] = float(np.mean(within))
            per_seed.append(row)
        fresh[variant.label] = per_seed + (
            [_mean_row(variant.label, per_seed, _conditional_columns(classes))] if args.seeds > 1 else [])
    if only is not None and not selected:
        return []
    csv_path = out.path("recipes-conditional.csv")
    rows = _merged(CONDITIONAL_VARIANTS, fresh, csv_path) if only is not None else \
        [r for v in CONDITIONAL_VARIANTS for r in fresh.get(v.label, [])]
    reference_row, reference_note = _reference_row(ws, size, real_stats, args.per_class)
    rows += reference_row
    rows.append({"variant": "real (training set)", "seed": None,
                 "spearman": spearman(real_labels[real_labels >= 0].astype(np.float64), real_emph[real_labels >= 0]),
                 **{f"class{c}_emphysema": real_stats[c]["mean"] for c in classes},
                 "classes_in_real_iqr": len(classes)})
    iqr = "; ".join(f"class {c}: {real_stats[c]['q1']:.2f}-{real_stats[c]['q3']:.2f}" for c in classes)
    notes = [
        (f"Class-conditional HA-GAN at {size}³ (the preset each row names) on the phantoms' emphysema classes "
         f"(column {LABEL_COLUMN!r}), "
         f"{ws.train_iters} iterations, {args.per_class} volumes per requested class."),
        *[f"{v.label} ({v.options}): {v.note}." for v in CONDITIONAL_VARIANTS],
        "spearman: requested class vs measured emphysema % (LAA-950 of the lung) over all generated volumes; "
        "the target is >= 0.8 with every class mean inside the real class's interquartile range.",
        f"Real interquartile ranges of emphysema %: {iqr}.",
        "within_class_ms_ssim: MS-SSIM among the generated volumes of one class, averaged over classes "
        "(lower = more diverse); a model can obey the class by collapsing inside it.",
        *reference_note,
    ]
    out.command = _commands(out.path("recipes-conditional.md"), out.command, only)
    out.write_table(rows, _conditional_columns(classes), title=f"Class-conditional HA-GAN recipes at {size}³",
                          notes=notes, stem="recipes-conditional")
    return rows


def _reference_row(ws: Workspace, size: int, real_stats: dict[int, dict], per_class: int
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """The conditional table's row for real phantoms drawn like the generated volumes (what a generator
    of exactly the phantom distribution scores), and its note; none without phantoms."""
    from medgen.experiments.guidance import real_class_emphysema

    if not ws.uses_phantoms:
        return [], []
    pool_dir = ws.larger_training_set(size, REFERENCE_POOL_FACTOR * ws.scale.n_train)
    pool_vs, pool_labels, _, pool_emph, _ = real_class_emphysema(pool_dir, ws.progress)
    try:
        ref = class_mean_reference(pool_emph, pool_labels, real_stats, per_class, seed=ws.seed)
    except ValueError as exc:
        return [], [f"No real reference row: {exc} ({pool_dir.name})."]
    within = within_class_ms_ssim_reference(pool_vs, pool_labels, sorted(real_stats), per_class, seed=ws.seed)
    row = {"variant": "real, other phantoms (reference)", "seed": None,
           "spearman": ref["spearman"], **{f"class{c}_emphysema": m for c, m in ref["class_means"].items()},
           "classes_in_real_iqr": ref["classes_in_real_iqr"], "within_class_ms_ssim": within}
    note = (f"real, other phantoms (reference): what a generator of exactly the phantom "
            f"distribution would score. {per_class} volumes per class drawn {ref['repeats']} times from "
            f"{len(pool_labels)} phantoms made with another seed than the training set ({pool_dir.name}); spearman: "
            "the median over draws; class means: of the whole pool; classes_in_real_iqr: the mean over draws (every "
            f"class inside in {100 * ref['all_inside']:.0f} % of the draws); within_class_ms_ssim: the mean over "
            f"{REFERENCE_MS_SSIM_DRAWS} draws per class, the within-class diversity of real data. The interquartile "
            "ranges are those of the training set's few volumes per class, so even real data misses some of them.")
    return [row], [note]


REFERENCE_POOL_FACTOR = 8  # the conditional reference draws from this many times the scale's phantoms
REFERENCE_DRAWS = 1000
REFERENCE_MS_SSIM_DRAWS = 10  # draws per class for the real within-class MS-SSIM (28 pairs each at 8 per class)


def within_class_ms_ssim_reference(volumes, labels: np.ndarray, classes, per_class: int, *,
                                   draws: int = REFERENCE_MS_SSIM_DRAWS, seed: int = 0) -> float:
    """MS-SSIM among ``per_class`` real volumes of one class (``volumes``, a VolumeSet, with class
    ``labels`` per volume), drawn without replacement ``draws`` times per class, averaged over draws and
    classes: the within-class diversity of the real data, as the generated rows' ``within_class_ms_ssim``
    measures it (the pairs of each draw scored with ``seed``). ValueError when a class has fewer than
    ``per_class`` volumes."""
    from medgen.metrics.diversity import ms_ssim_diversity

    rng = np.random.default_rng(seed)
    per_class_means = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if members.size < per_class:
            raise ValueError(f"the pool has {members.size} volumes of class {c}, fewer than {per_class}")
        scores = [ms_ssim_diversity(volumes.subset(rng.choice(members, per_class, replace=False).tolist()),
                                    seed=seed)["mean"] for _ in range(draws)]
        per_class_means.append(float(np.mean(scores)))
    return float(np.mean(per_class_means))


def class_mean_reference(emphysema: np.ndarray, labels: np.ndarray, real_stats: dict[int, dict], per_class: int,
                         *, draws: int = REFERENCE_DRAWS, seed: int = 0) -> dict[str, Any]:
    """The conditional table's numbers for real volumes: ``per_class`` volumes of every class of
    ``real_stats`` drawn without replacement from the pool (``emphysema`` % and class ``labels``
    per volume; NaN emphysema left out), ``draws`` times. Returns ``spearman`` (median over
    draws), ``classes_in_real_iqr`` (mean over draws of the classes whose drawn mean lies in
    ``real_stats[c]``'s q1..q3), ``all_inside`` (share of draws with every class inside),
    ``class_means`` (of the whole pool) and ``repeats``. ValueError when a class of the pool has
    fewer than ``per_class`` volumes."""
    from medgen.experiments.guidance import spearman

    classes = sorted(real_stats)
    pools = {c: emphysema[(labels == c) & np.isfinite(emphysema)] for c in classes}
    short = [c for c in classes if pools[c].size < per_class]
    if short:
        raise ValueError(f"the pool has {pools[short[0]].size} volumes of class {short[0]}, fewer than {per_class}")
    rng = np.random.default_rng(seed)
    inside = np.zeros((draws, len(classes)), dtype=bool)
    rhos = np.empty(draws)
    x = np.repeat(np.array(classes, dtype=np.float64), per_class)
    for t in range(draws):
        drawn = [rng.choice(pools[c], per_class, replace=False) for c in classes]
        for j, c in enumerate(classes):
            inside[t, j] = real_stats[c]["q1"] <= float(drawn[j].mean()) <= real_stats[c]["q3"]
        rhos[t] = spearman(x, np.concatenate(drawn))
    return {"spearman": float(np.nanmedian(rhos)), "classes_in_real_iqr": float(inside.sum(1).mean()),
            "all_inside": float(inside.all(1).mean()), "class_means": {c: float(pools[c].mean()) for c in classes},
            "repeats": draws}


def _conditional_columns(classes) -> tuple[str, ...]:
    return (*CONDITIONAL_COLUMNS_HEAD, *[f"class{c}_emphysema" for c in classes], "classes_in_real_iqr",
            "within_class_ms_ssim")
