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
sample with 50 DDIM steps. The families are HA-GAN, the paper's baselines
(``wgan-gp``, ``vae-gan``, ``alpha-gan``, ``pggan``, ``stylegan2``) and the
diffusion models (``ddpm``, ``ldm``).

``--seeds N`` trains every family N times (training seeds SEED … SEED+N−1; the
data, the sampling and the metrics keep ``--seed``) and adds a mean and a
standard-deviation row per model (``synthesis-summary.md``: mean ± std).

Figures, per resolution (the first training seed of every model):

* ``synthesis-samples-S.png`` (the paper's Figure 3): two random samples per
  model next to two real held-out volumes, axial, coronal and sagittal
  mid-slices;
* ``synthesis-embedding-S.png`` (the paper's Figure 4): the features of the
  real held-out volumes, of every model's samples and of the untrained
  generator's in one metric-MDS map with 95 % covariance ellipses, as
  ``medgen experiment embedding`` draws them; its numbers in
  ``synthesis-embedding.csv``.

Writes ``synthesis.csv``/``synthesis.md`` and the evaluation JSON of every row.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from medgen.experiments.workspace import (
    IS_COLUMNS,
    IS_NOTES,
    METRIC_COLUMNS,
    METRIC_NOTES,
    ExperimentOutput,
    Workspace,
    checkpoint_iteration,
    metric_row,
)

HELP = "metrics of generated volumes across resolutions, against untrained and real references"
DESCRIPTION = __doc__.split("\n\n", 1)[1]


FAMILY_LABELS = {"hagan": "HA-GAN", "wgan-gp": "WGAN-GP", "vae-gan": "VAE-GAN", "alpha-gan": "α-GAN",
                 "pggan": "PGGAN", "stylegan2": "StyleGAN2", "ddpm": "DDPM", "ldm": "LDM"}
DEFAULTS = {"families": "hagan", "seeds": 1}  # left out of the canonical command line
SAMPLES_PER_MODEL = 2  # volumes per model in the samples figure


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=None, metavar="S,S",
                   help="resolutions to train and evaluate (default: demo 32,64; full 128,256; with --data its size)")
    p.add_argument("--families", default="hagan", metavar="F,F",
                   help="generator families side by side: " + ", ".join(FAMILY_LABELS) + " (default hagan)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="the same training budget for every family: M minutes of iterations at each family's "
                        "measured speed (default: the scale's iterations for every family)")
    p.add_argument("--seeds", type=int, default=DEFAULTS["seeds"], metavar="N",
                   help="training seeds per family (SEED ... SEED+N-1), with mean and std rows (default 1)")


def _families(args: argparse.Namespace) -> list[str]:
    from medgen.core.errors import UsageError

    names = [f.strip() for f in str(args.families).split(",") if f.strip()]
    bad = [f for f in names if f not in FAMILY_LABELS]
    if not names or bad:
        raise UsageError(f"--families {args.families!r}: choose from {', '.join(FAMILY_LABELS)}")
    if len(set(names)) != len(names):
        raise UsageError(f"--families {args.families!r}: a family is listed twice")
    if args.run is not None and names != ["hagan"]:
        raise UsageError("--run evaluates one trained HA-GAN run; leave --families out")
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: need at least 1")
    if args.run is not None and args.seeds != 1:
        raise UsageError("--run evaluates one trained run; leave --seeds out")
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
    preset = ws.scale.preset_for(fam)
    device = ws.torch_device().type
    print(f"\nmedgen bench train --family {family} --preset {preset} --size {size} --batch {ws.scale.batch} "
          f"--device {device} --warmup 2 --repeats 5", flush=True)
    r = fam.bench.run_isolated("train", preset=preset, size=size, batch=ws.scale.batch, device=device, warmup=2,
                               repeats=5)
    per_level = r.get("seconds_per_level")  # pggan: an iteration's cost depends on the level of the growth
    if per_level:
        from medgen.families.pggan.schedule import iterations_within

        hp = fam.hparams_from_dict({})
        costs = [seconds for _, seconds in sorted(per_level.items(), key=lambda kv: int(kv[0]))]
        iterations = iterations_within(minutes * 60, costs, hp.fade_iters, hp.stable_iters)
    else:
        iterations = max(1, int(minutes * 60 / r["seconds_median"]))
    atomic_write_json(record, {"family": family, "minutes": minutes, "seconds_per_iteration": r["seconds_median"],
                               "seconds_per_level": per_level,
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


def run_name(family: str, size: int, minutes: float | None, seed_offset: int = 0, base_seed: int = 0) -> str:
    """``WORK/runs`` name of ``family``'s run at ``size``³: ``FAMILY-S[-Mmin][-seedK]``.

    The first training seed keeps the name without a seed, so runs trained before ``--seeds`` are reused."""
    tag = f"-{minutes:g}min" if minutes else ""
    return f"{family}-{size}{tag}" + (f"-seed{base_seed + seed_offset}" if seed_offset else "")


def _family_run(ws: Workspace, family: str, size: int, minutes: float | None, calibrate_only: bool = False,
                seed_offset: int = 0) -> Path | None:
    """The trained run of ``family`` at ``size``³ (within the budget of ``minutes`` when given), trained
    with seed ``ws.seed + seed_offset``.

    The budget (iterations) is measured once per family and shared by its seeds. ``calibrate_only``:
    measure the iteration budgets, train nothing."""
    seed = ws.seed + seed_offset
    if family == "ldm":
        half = None if minutes is None else minutes / 2
        ae_name = run_name("ldm-autoencoder", size, minutes, seed_offset, ws.seed)
        name = run_name("ldm", size, minutes, seed_offset, ws.seed)
        ae_iters = budget_iterations(ws, "ldm-autoencoder", run_name("ldm-autoencoder", size, minutes), size,
                                     half) if half else None
        iters = budget_iterations(ws, "ldm", run_name("ldm", size, minutes), size, half) if half else None
        if calibrate_only:
            return None
        ae = ws.model(ae_name, size, family="ldm-autoencoder", iters=ae_iters, seed=seed)
        return ws.model(name, size, family="ldm", iters=iters, autoencoder_run=ae, seed=seed)
    iters = budget_iterations(ws, family, run_name(family, size, minutes), size, minutes) if minutes else None
    if calibrate_only:
        return None
    return ws.model(run_name(family, size, minutes, seed_offset, ws.seed), size, family=family, iters=iters,
                    seed=seed)


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


def training_minutes(run_dir: Path) -> float | None:
    """Minutes the run spent in training iterations, from its ``metrics.csv`` (each logged window's
    iterations divided by its iterations per second); None when the run has no such log."""
    import csv
    import math

    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return None
    seconds, previous = 0.0, 0
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                it, speed = int(row["iteration"]), float(row["it_per_s"])
            except (KeyError, TypeError, ValueError):
                return None
            if it > previous and speed > 0 and math.isfinite(speed):
                seconds += (it - previous) / speed
            previous = max(previous, it)
    return seconds / 60


def mean_std_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """The mean and the sample standard deviation (ddof 1) over seeds of every numeric column of ``rows``
    (the rows of one model), as two rows with ``seed`` "mean" and "std"; None where no seed has a value."""
    from medgen.experiments.workspace import seed_statistics

    head = {k: rows[0][k] for k in ("size", "model", "budget_minutes", "features") if k in rows[0]}
    mean, std = seed_statistics(rows, [c for c in columns if c not in head])
    return [{**head, "seed": "mean", **mean}, {**head, "seed": "std", **std}]


def summary_rows(rows: list[dict[str, Any]], columns: Sequence[str], digits: int = 4) -> list[dict[str, Any]]:
    """One row per model: "mean ± std" of every column from the "mean"/"std" rows, the value itself for the
    reference rows (one seed)."""
    from medgen.core.tables import format_cell

    out = []
    by_key = {(r["size"], r["model"], r.get("seed")): r for r in rows}
    for r in rows:
        if r.get("seed") not in ("mean", None):
            continue
        std = by_key.get((r["size"], r["model"], "std"), {})
        row = {"size": r["size"], "model": r["model"]}
        for c in columns:
            if c in row or c == "seed":
                continue
            value = r.get(c)
            if isinstance(value, float) and std.get(c) is not None:
                row[c] = f"{format_cell(value, digits)} ± {format_cell(std[c], 2)}"
            else:
                row[c] = value
        out.append(row)
    return out


def save_samples_figure(path: Path, groups: dict[str, Path | list], size: int, k: int = SAMPLES_PER_MODEL) -> Path:
    """The paper's Figure 3: ``k`` volumes of every group (label → sample folder, or a list of volumes) in
    axial, coronal and sagittal mid-slices, one row per group."""
    from medgen.experiments.ablation import sample_volumes, save_ablation_figure

    rows = [(label, src if isinstance(src, list) else sample_volumes(src, k)) for label, src in groups.items()]
    return save_ablation_figure(rows, path, planes=("axial", "coronal", "sagittal"),
                                title=f"{k} random volumes per model at {size}³: axial, coronal and sagittal "
                                      "mid-slices")


# Colours and markers of the groups in the embedding figure: the real volumes blue, the untrained generator grey,
# the models in the order given (no grey among them, so no model looks like the untrained floor).
MODEL_STYLES: tuple[tuple[str, str], ...] = (
    ("tab:orange", "^"), ("tab:green", "s"), ("tab:red", "D"), ("tab:purple", "v"), ("tab:brown", "P"),
    ("tab:pink", "X"), ("tab:olive", "<"), ("tab:cyan", ">"), ("black", "*"),
)


def group_styles(labels: Sequence[str], real: str, untrained: str) -> dict[str, tuple[str, str]]:
    """Label → (colour, marker): ``real`` blue circles, ``untrained`` grey squares, the others in turn."""
    styles = {real: ("tab:blue", "o"), untrained: ("tab:gray", "s")}
    models = [label for label in labels if label not in styles]
    styles.update({label: MODEL_STYLES[k % len(MODEL_STYLES)] for k, label in enumerate(models)})
    return styles


NEAR_SD = 10.0  # groups whose centroid lies within this many real SDs get the second, close-up map


def save_family_embedding_figure(path: Path, coords: dict[str, Any], near: dict[str, Any] | None, n_std: float,
                                 real: str, untrained: str, title: str) -> Path:
    """Two panels: the map of every group (left) and, when some groups lie far away (``near`` not None), a map
    computed again from the real volumes and the groups near them only (right), so the far ones (noise) do
    not squeeze the near ones together."""
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path
    from medgen.viz.embedding import draw_groups_with_ellipses

    styles = group_styles(list(coords), real, untrained)
    fig = Figure(figsize=(12.5 if near else 7.5, 5.8))
    axes = fig.subplots(1, 2 if near else 1, squeeze=False)[0]
    draw_groups_with_ellipses(axes[0], coords, n_std, styles=styles, legend=False)
    axes[0].set_title("all groups", fontsize=9)
    if near:
        draw_groups_with_ellipses(axes[1], near, n_std, styles=styles, legend=False)
        axes[1].set_title(f"MDS again of the groups within {NEAR_SD:g} real SDs of the real volumes", fontsize=9)
    for ax in axes:
        ax.set_xlabel("MDS 1")
        ax.set_ylabel("MDS 2")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.80 if near else 0.68, wspace=0.25, top=0.88)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def embedding_figure(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace, size: int,
                     folders: dict[str, Path]) -> tuple[Path, list[dict[str, Any]], float]:
    """The paper's Figure 4: every group's features (label → folder; the first is the real reference, the last
    the untrained generator) in one metric-MDS map with 95 % ellipses. Returns the figure, the embedding rows
    and the MDS Stress-1."""
    import numpy as np

    from medgen.experiments.embedding import embedding_rows, group_features
    from medgen.metrics.features import make_extractor
    from medgen.viz.embedding import euclidean_distances, mds_embedding, n_std_for_coverage, stress1

    coverage = 0.95
    n_std = n_std_for_coverage(coverage)
    # The input size of medgen evaluate's default (64³ for random features, native for med3d): shared cache.
    extractor = make_extractor(args.features, weights=args.weights,
                               input_size=64 if args.features == "random" else None, device=ws.device, seed=ws.seed)
    feats = group_features(folders, extractor, ws.scale.n_samples, ws.seed, ws.progress)
    coords = dict(zip(feats, mds_embedding(list(feats.values()), seed=ws.seed, method="metric")))
    stress = stress1(euclidean_distances(np.concatenate(list(feats.values()))), np.concatenate(list(coords.values())))
    labels = list(folders)
    rows = [{"size": size, **r} for r in embedding_rows(coords, labels[0], n_std)]
    close = [r["group"] for r in rows if r["dist_to_real_sd"] <= NEAR_SD]
    near = None
    if len(close) < len(rows) and len(close) > 1:
        near = dict(zip(close, mds_embedding([feats[g] for g in close], seed=ws.seed, method="metric")))
    path = out.path(f"synthesis-embedding-{size}.png")
    save_family_embedding_figure(path, coords, near, n_std, labels[0], labels[-1],
                                 f"{size}³: metric MDS of {extractor.name} features (Stress-1 {stress:.2f}); "
                                 f"ellipses hold {coverage:.0%} of a Gaussian ({n_std:.2f} SD)")
    return path, rows, stress


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    embedding: list[dict[str, Any]] = []
    stresses: dict[int, float] = {}
    eval_dir = out.path("evaluations")
    extractor = "med3d" if args.features == "med3d" else "random"
    families = _families(args)
    seeds = [ws.seed + k for k in range(args.seeds)]
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
        # IS: a classifier of the severity label trained on the real training volumes (None: no such label)
        classifier = ws.classifier(size)
        metrics = "fid,mmd,prdc,ms_ssim,anatomy" + (",is" if classifier is not None else "")
        if classifier is not None:
            import json

            info = json.loads((classifier / "classifier.json").read_text(encoding="utf-8"))
            acc = info.get("test_accuracy")
            notes_extra.append(f"IS at {size}³: classifier of {info.get('label_column')!r} "
                               f"({len(info.get('classes') or [])} classes, {classifier.name}), test accuracy "
                               + (f"{acc:.2f}" if isinstance(acc, (int, float)) else "n/a")
                               + f" on its data's test split (n={info.get('split', {}).get('n_test')}).")
        else:
            notes_extra.append(f"IS at {size}³: not computed (the training set has no label column with 2+ classes).")
        first_samples: dict[str, Path] = {}
        for family in families:
            label = f"{FAMILY_LABELS[family]} (trained)"
            per_seed = []
            for k, seed in enumerate(seeds):
                run_dir = Path(args.run) if args.run is not None else _family_run(ws, family, size, args.minutes,
                                                                                  seed_offset=k)
                shared = family == "hagan" and not args.minutes and k == 0  # the embedding experiment's samples
                sample_dir = ws.samples(run_dir, f"synthesis-{size}" if shared else f"synthesis-{run_dir.name}")
                first_samples.setdefault(FAMILY_LABELS[family], sample_dir)
                if family == "ldm" and k == 0:
                    ae_iters = checkpoint_iteration(
                        run_dir.with_name(run_dir.name.replace("ldm-", "ldm-autoencoder-", 1)))
                    notes_extra.append(f"LDM at {size}³: its autoencoder trained {ae_iters} iterations, then the "
                                       "latent diffusion model the iterations in the table.")
                spent = training_minutes(run_dir)
                if family == "ldm" and spent is not None:
                    ae_spent = training_minutes(run_dir.with_name(run_dir.name.replace("ldm-", "ldm-autoencoder-", 1)))
                    spent = None if ae_spent is None else spent + ae_spent
                slug = family.replace("-", "") + (f"-seed{seed}" if k else "")
                report = ws.evaluate(heldout_dir, sample_dir, eval_dir / f"{size}-{slug}.json",
                                     features=args.features, weights=args.weights, n=ws.scale.n_samples,
                                     metrics=metrics, classifier=classifier)
                per_seed.append({"size": size, "model": label, "seed": seed,
                                 "iterations": checkpoint_iteration(run_dir), "budget_minutes": args.minutes,
                                 "train_minutes": spent, "features": extractor, **metric_row(report)})
            rows += per_seed
            if len(per_seed) > 1:
                rows += mean_std_rows(per_seed, ("iterations", "train_minutes", *METRIC_COLUMNS, *IS_COLUMNS))
        untrained = ws.untrained_samples(size, f"untrained-{size}")
        for label, fake, iters in (("untrained generator", untrained, 0), ("real (training set)", train_dir, None)):
            slug = label.split(" ")[0].lower()
            report = ws.evaluate(heldout_dir, fake, eval_dir / f"{size}-{slug}.json", features=args.features,
                                 weights=args.weights, n=ws.scale.n_samples, metrics=metrics, classifier=classifier)
            rows.append({"size": size, "model": label, "seed": None, "iterations": iters, "budget_minutes": None,
                         "train_minutes": None, "features": extractor, **metric_row(report)})

        # the paper's Figures 3 and 4: the first seed of every model next to the real volumes
        from medgen.experiments.ablation import heldout_volumes

        real_label = "real (held-out)"
        fig3 = save_samples_figure(out.path(f"synthesis-samples-{size}.png"),
                                   {real_label: list(heldout_volumes(heldout_dir, SAMPLES_PER_MODEL)), **first_samples},
                                   size)
        out.add_figure(fig3)
        fig4, emb_rows, stresses[size] = embedding_figure(
            ws, out, args, size, {real_label: heldout_dir, **first_samples, "untrained generator": untrained})
        out.add_figure(fig4)
        embedding += emb_rows

    multi = args.seeds > 1
    columns = ("size", "model", *(("seed",) if multi else ()), "iterations",
               *(("budget_minutes",) if args.minutes else ()), "train_minutes", "features", *METRIC_COLUMNS,
               "is", "is_real")
    notes = [*METRIC_NOTES, *IS_NOTES,
             f"{ws.scale.n_samples} volumes per set at most; held-out phantoms are the reference set."
             if ws.uses_phantoms else f"{ws.scale.n_samples} volumes per set at most; --heldout is the reference set.",
             *notes_extra,
             "train_minutes: the time the run spent in training iterations, from its metrics.csv (LDM: both "
             "stages); on a busy machine more than the budget, which is counted in iterations."]
    if multi:
        notes.append(f"Training seeds {seeds[0]}..{seeds[-1]} per model (data, sampling and metrics: seed {ws.seed}); "
                     "mean and std rows: over the seeds (std with ddof 1).")
    if args.minutes:
        if args.run is None:
            write_budgets(ws, out, families, sizes, args.minutes)
        notes.append(f"budget_minutes: every family trained for the iterations its measured speed (`medgen bench train`, "
                     f"budgets.csv) fits into {args.minutes:g} minutes; diffusion models sampled with 50 DDIM steps.")
    notes.append("Figures: synthesis-samples-S.png (random samples, first training seed, next to held-out volumes) "
                 "and synthesis-embedding-S.png (metric MDS of the same features with 95 % covariance ellipses; "
                 "synthesis-embedding.csv, Stress-1 "
                 + ", ".join(f"{v:.3f} at {k}³" for k, v in stresses.items()) + ").")
    out.write_table(rows, columns, title="Synthesis quality across resolutions", notes=notes)
    if multi:
        summary_columns = ("size", "model", "iterations", "train_minutes", *METRIC_COLUMNS, "is")
        out.write_table(summary_rows(rows, summary_columns), summary_columns, stem="synthesis-summary",
                        title=f"Synthesis quality: mean ± std over {args.seeds} training seeds", notes=notes)
    out.write_table(embedding, ("size", "group", "n", "centroid_x", "centroid_y", "ellipse_area", "dist_to_real_sd",
                                "frac_in_real_ellipse"), stem="synthesis-embedding",
                    title="Real and generated volumes in one feature map (metric MDS)",
                    notes=["dist_to_real_sd: Mahalanobis distance of the group's centroid from the real centroid under "
                           "the real group's 2D covariance; frac_in_real_ellipse: share of the group inside the real "
                           "95 % ellipse; ellipse_area in squared MDS units (compare with the real row)."])
    return {"rows": rows, "embedding": embedding, "stress1": stresses}
