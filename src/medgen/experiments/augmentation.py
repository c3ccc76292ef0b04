"""``medgen experiment augmentation``: class-conditional synthetic volumes as extra training data.

The paper's data-augmentation experiment: does adding volumes generated for a
given disease stage help a classifier of that stage?

1. The training set (``--label-column``, default ``label``: the emphysema severity
   class 0-3 of the thorax-CT phantoms) at the scale's small size; ``--n-real N``
   keeps a seeded class-stratified subset of N volumes (the small-data setting
   where augmentation should matter).
2. A class-conditional HA-GAN (``medgen train --num-classes K``) is trained on
   exactly those real volumes, so the synthetic volumes carry no information the
   real-only classifier lacks. ``--conditioning`` chooses how it obeys the class:
   ``classifier`` (default: a separate classifier C, learning from the real
   volumes flipped and shifted in-plane with 4 updates per iteration, guides G;
   D also sees the lung window), ``classifier-diverse`` (the same with the mode-seeking
   term against collapse inside a class) or ``discriminator`` (D's class heads, AC-GAN as
   in the paper).
3. It generates ``--synthetic-per-class`` volumes for every class (default: as
   many as the largest real class, so the synthetic set is balanced and about the
   size of the real one).
4. The 3D classifier is trained on (a) the real volumes only and (b) real +
   synthetic, with identical settings (architecture, optimiser, number of
   iterations, batch, shift/intensity jitter, initial weights per seed), for each
   seed, and tested on the real held-out set: accuracy and balanced accuracy.

Writes ``augmentation.csv``/``.md`` (one row per setting), ``augmentation-seeds.csv``/``.md``
(one row per setting and seed), ``augmentation-emphysema.csv``/``.md`` (measured
emphysema % of real and synthetic volumes per class: did the generator learn the
label at all?), ``augmentation.png`` (accuracy per setting with the seeds and the
chance levels) and ``conditional-samples.png`` (synthetic volumes per class).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.core.tables import write_csv
from medgen.experiments.workspace import ExperimentOutput, Workspace, checkpoint_iteration

HELP = "class-conditional synthetic volumes as extra training data for a disease-stage classifier"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
DEFAULTS = {"label_column": "label", "no_jitter": False, "conditioning": "classifier"}

# How the generator is made to obey the class (``--conditioning``): architecture and training
# settings of ``medgen train``, and what they mean. Measured side by side in
# ``medgen experiment recipes --conditional`` (docs/results/recipes/recipes-conditional.md).
CONDITIONINGS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "discriminator": ({}, {}, "D^H and D^L predict the class (AC-GAN; one class loss on their mean logits, λ 0.1)"),
    "classifier": ({"class_conditioning": "classifier", "d_windows": "lung"},
                   {"class_loss": "per-head", "class_weight": 0.3, "c_augment": True, "c_steps": 4},
                   "D unconditional; a separate classifier C learns the class from the real volumes, flipped and "
                   "shifted in-plane, 4 updates per iteration, and G's loss adds 0.3 x its cross-entropy per head; "
                   "D and C also see the lung window"),
    "classifier-diverse": ({"class_conditioning": "classifier", "d_windows": "lung"},
                           {"class_loss": "per-head", "class_weight": 0.3, "c_augment": True, "c_steps": 4,
                            "diversity_weight": 0.3},
                           "as 'classifier', and G's loss also adds the mode-seeking term of MSGAN (weight 0.3), "
                           "against collapse inside a class"),
}

CLASSIFIER_BATCH = 8  # volumes per classifier step (train_classifier's default)
CLASSIFIER_LR = 1e-3  # AdamW, cosine decay to 0 over the run
SAMPLES_PER_CLASS_SHOWN = 4  # synthetic volumes per class in conditional-samples.png
LUNG_WINDOW_HU = (-1024.0, -200.0)  # display window: emphysema black, normal lung dark grey, tissue white


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-column", default="label", metavar="COL",
                   help="manifest column with the class to predict (default label: the phantoms' emphysema "
                        "severity 0-3); both --data and --heldout need it")
    p.add_argument("--n-real", type=int, default=None, metavar="N",
                   help="use a class-stratified random subset (seeded by --seed) of N real training volumes, "
                        "for the generator and the classifiers alike (default: all)")
    p.add_argument("--synthetic-per-class", type=int, default=None, metavar="N",
                   help="synthetic volumes per class added in the real + synthetic setting "
                        "(default: the size of the largest real class)")
    p.add_argument("--conditioning", choices=sorted(CONDITIONINGS), default="classifier",
                   help="how the generator obeys the class: 'classifier' (default; a separate classifier C on flipped "
                        "and shifted volumes, 4 updates per iteration, and the lung window, the best of medgen experiment recipes --conditional "
                        "on 64 phantoms), 'classifier-diverse' (the same with the mode-seeking term, more diverse "
                        "inside a class) or 'discriminator' (D's class heads, the paper's AC-GAN)")
    p.add_argument("--no-jitter", action="store_true",
                   help="train both classifiers without the random shifts and intensity jitter (default: with)")


# ---------------------------------------------------------------------- labels and subsets
def read_labels(folder: Path, column: str, classes: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Class index of every manifest row of a preprocessed ``folder`` (manifest order; -1 = unlabelled).

    The rule of :class:`medgen.data.dataset.VolumeDataset`: integer labels are used as they
    are; otherwise the names are numbered in sorted order. ``classes``: the names of another
    set (the training set) to number by, so that training and test agree. Returns
    ``(labels, names)`` with ``names`` empty for integer labels.
    """
    from medgen.data.dataset import load_manifest
    from medgen.core.errors import InputError, UsageError

    rows = load_manifest(folder)
    if column not in rows[0]:
        raise UsageError(f"--label-column {column!r}: {folder}/manifest.csv has no such column "
                         f"(columns: {', '.join(rows[0])})")
    values = [(row[column] or "").strip() for row in rows]
    present = [v for v in values if v]
    try:
        numbers = {v: int(v) for v in present}
    except ValueError:
        numbers = None
    if numbers is not None and not classes:
        bad = [v for v in present if numbers[v] < 0]
        if bad:
            raise InputError(f"{folder}/manifest.csv: class {bad[0]!r} in column {column!r} is negative")
        return [numbers.get(v, -1) for v in values], []
    names = list(classes) if classes else sorted(set(present))
    index = {name: k for k, name in enumerate(names)}
    unknown = sorted(set(present) - set(index))
    if unknown:
        raise InputError(f"{folder}/manifest.csv: class {unknown[0]!r} of column {column!r} does not occur in the "
                         f"training set (classes: {', '.join(names)})")
    return [index.get(v, -1) for v in values], names


def stratified_counts(class_sizes: dict[int, int], n: int) -> dict[int, int]:
    """How many items of each class a class-stratified subset of ``n`` items takes.

    Class c gets its share ``n * size_c / total`` rounded by largest remainder (Hamilton's
    method), at least one item (every class stays represented) and at most ``size_c``;
    ties go to the lower class index. Needs ``len(class_sizes) <= n <= total``.
    """
    from medgen.core.errors import UsageError

    total = sum(class_sizes.values())
    classes = sorted(class_sizes)
    if not len(classes) <= n <= total:
        raise UsageError(f"--n-real {n}: need between {len(classes)} (one per class) and {total} "
                         f"(the labelled training volumes)")
    quota = {c: n * class_sizes[c] / total for c in classes}
    take = {c: min(class_sizes[c], max(1, math.floor(quota[c]))) for c in classes}
    while sum(take.values()) > n:  # the one-per-class floor overshot: trim the most over-served class
        c = max((c for c in classes if take[c] > 1), key=lambda c: (take[c] - quota[c], -c))
        take[c] -= 1
    while sum(take.values()) < n:
        c = max((c for c in classes if take[c] < class_sizes[c]), key=lambda c: (quota[c] - take[c], -c))
        take[c] += 1
    return take


def stratified_subset(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Sorted indices of a seeded class-stratified random subset of ``n`` labelled items.

    ``labels``: class per item (-1 = unlabelled, never chosen). Counts per class follow
    :func:`stratified_counts`; which items of a class are taken is a uniform random draw
    from ``numpy.random.default_rng(seed)`` (the same seed gives the same subset).
    """
    labels = np.asarray(labels)
    classes = sorted(int(c) for c in np.unique(labels[labels >= 0]))
    counts = stratified_counts({c: int((labels == c).sum()) for c in classes}, n)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        chosen += rng.choice(members, counts[c], replace=False).tolist()
    return sorted(int(i) for i in chosen)


def write_subset_folder(source: Path, dest: Path, indices: Sequence[int], seed: int) -> Path:
    """``dest``: a preprocessed folder holding rows ``indices`` of the preprocessed folder ``source``
    (manifest rows and volumes copied), e.g. the real training subset the generator is trained on.

    Reused when it already holds exactly these rows of ``source``; rebuilt otherwise.
    ``seed``: recorded in ``dest/subset.json`` with the source and the ids.
    """
    from medgen.data.dataset import load_manifest, load_preprocess_info, volume_column, volume_kinds
    from medgen.core.fileio import atomic_write_json

    rows = load_manifest(source)
    columns = [volume_column(name) for name in volume_kinds(load_preprocess_info(source))]
    chosen = [rows[i] for i in indices]
    record = {"source": str(source.resolve()), "seed": seed, "ids": [r["id"] for r in chosen]}
    marker = dest / "subset.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == record:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    for row in chosen:
        for column in columns:  # the image and every other named volume (e.g. the phantoms' tissue map)
            if not row.get(column):
                continue
            target = dest / row[column]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / row[column], target)
    write_csv(dest / "manifest.csv", chosen, list(rows[0]))
    shutil.copyfile(source / "preprocess.json", dest / "preprocess.json")
    atomic_write_json(marker, record)  # written last: marks the folder complete
    print(f"\n{dest}: {len(chosen)} of {len(rows)} volumes of {source} (class-stratified, seed {seed})", flush=True)
    return dest


# ---------------------------------------------------------------------- statistics
def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean recall over the classes present in the test set (rows: true class, columns: predicted)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(confusion)[present] / support[present]))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def emphysema_percentages(volumes, progress: bool = False, desc: str = "emphysema") -> np.ndarray:
    """Emphysema % (LAA-950 of the lung, :func:`medgen.metrics.anatomy.ct_anatomy`) of every volume.

    ``volumes``: a CT :class:`medgen.metrics.volumes.VolumeSet` (``hu(i)``, ``spacing(i)``).
    NaN where no lung is found.
    """
    from tqdm import tqdm

    from medgen.metrics.anatomy import ct_anatomy

    return np.array([ct_anatomy(volumes.hu(i), volumes.spacing(i))["emphysema_pct"]
                     for i in tqdm(range(len(volumes)), desc=desc, disable=not progress, leave=False)], dtype=np.float64)


def summarise_by_class(values: Sequence[float], labels: Sequence[int]) -> dict[int, dict[str, float]]:
    """Per class: ``n`` (finite values), ``mean`` and ``std`` (population, ddof=0) of ``values``."""
    values, labels = np.asarray(values, dtype=np.float64), np.asarray(labels)
    out: dict[int, dict[str, float]] = {}
    for c in sorted(int(c) for c in np.unique(labels)):
        v = values[(labels == c) & np.isfinite(values)]
        out[c] = {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
                  "std": float(v.std()) if v.size else math.nan}
    return out


# ---------------------------------------------------------------------- classifier
def _steps_dataset(items, n_items: int, seed: int):
    """``n_items`` items of ``items`` as consecutive seeded permutations: every item is used
    equally often (±1), so a single pass is a fixed number of classifier iterations."""
    from torch.utils.data import Dataset

    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(items)) for _ in range(-(-n_items // len(items)))])[:n_items]

    class _Steps(Dataset):
        def __len__(self) -> int:
            return n_items

        def __getitem__(self, i: int):
            return items[int(order[i])]

    return _Steps()


def _train_and_test(train_items, test_items, num_classes: int, size: int, iters: int, seed: int,
                    jitter: bool, device: str, progress: bool) -> dict[str, Any]:
    from medgen.families.classifier.train import evaluate_classifier, train_classifier

    steps = _steps_dataset(train_items, iters * CLASSIFIER_BATCH, seed)
    trained = train_classifier(steps, [], num_classes, size, epochs=1, batch_size=CLASSIFIER_BATCH,
                               lr=CLASSIFIER_LR, seed=seed, augment=jitter, device=device, progress=progress)
    result = evaluate_classifier(trained.model, test_items, batch_size=CLASSIFIER_BATCH, device=device)
    return {"accuracy": result["accuracy"], "balanced_accuracy": balanced_accuracy(np.array(result["confusion"])),
            "test_loss": result["loss"], "train_loss": trained.history[-1]["train_loss"],
            "confusion": result["confusion"]}


# ---------------------------------------------------------------------- figures
def _accuracy_figure(path: Path, per_seed: dict[str, list[dict]], chance: float, majority: float) -> None:
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path

    fig = Figure(figsize=(7.5, 3.6))
    axes = fig.subplots(1, 2)
    settings = list(per_seed)
    colours = ("#7f7f7f", "#1f77b4")
    for ax, key, title in zip(axes, ("accuracy", "balanced_accuracy"), ("accuracy", "balanced accuracy")):
        for i, setting in enumerate(settings):
            values = np.array([r[key] for r in per_seed[setting]])
            mean, std = mean_std(values)
            ax.bar(i, mean, width=0.6, color=colours[i % 2], alpha=0.55,
                   yerr=0.0 if math.isnan(std) else std, capsize=6, label=None)
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(i + jitter, values, color="black", s=14, zorder=3)
        ax.axhline(chance, color="crimson", ls="--", lw=1, label=f"chance 1/K = {chance:.2f}")
        if key == "accuracy":
            ax.axhline(majority, color="darkorange", ls=":", lw=1.2, label=f"majority class = {majority:.2f}")
        ax.set_xticks(range(len(settings)), settings)
        ax.set_ylim(0, 1)
        ax.set_title(f"test {title}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Classifier on the real held-out set: mean ± std over {len(next(iter(per_seed.values())))} seeds "
                 "(dots: one seed each)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _samples_figure(path: Path, real: dict[int, np.ndarray | None], synthetic: dict[int, list[np.ndarray]],
                    window: tuple[float, float], unit: str, class_names: Sequence[str]) -> None:
    """Rows: classes; column pairs (axial, coronal mid-slice): a real volume of the class, then synthetic ones."""
    from matplotlib.figure import Figure

    from medgen.core.fileio import atomic_path
    from medgen.viz.mosaic import plane_slice

    classes = sorted(synthetic)
    n_fake = max(len(v) for v in synthetic.values())
    cols = 2 * (1 + n_fake)
    fig = Figure(figsize=(1.15 * cols, 1.3 * len(classes) + 0.7))
    axes = fig.subplots(len(classes), cols, squeeze=False)
    for r, c in enumerate(classes):
        shown = [("real", real.get(c))] + [(f"synthetic {j + 1}", v) for j, v in enumerate(synthetic[c])]
        for j, (title, vol) in enumerate(shown):
            for p, plane in enumerate(("axial", "coronal")):
                ax = axes[r, 2 * j + p]
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
                if vol is None:
                    continue
                ax.imshow(plane_slice(vol, plane), cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
                if r == 0:
                    ax.set_title(f"{title}\n{plane}", fontsize=7)
        name = class_names[c] if c < len(class_names) else str(c)
        axes[r, 0].set_ylabel(f"class {name}", fontsize=8)
    fig.suptitle(f"Class-conditional samples (same latent z along a column; grey window {window[0]:g}…{window[1]:g} {unit})",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# ---------------------------------------------------------------------- the experiment
def _first(vs, n: int):
    """The first ``n`` volumes by name of a sample folder (an earlier, larger run may have left more)."""
    from medgen.core.errors import InputError

    if len(vs) < n:
        raise InputError(f"{vs.root}: {len(vs)} volumes, expected {n}")
    return vs.subset(sorted(range(len(vs)), key=lambda i: vs.ids[i])[:n])


def run(ws: Workspace, out: ExperimentOutput, args: argparse.Namespace) -> dict[str, Any]:
    from medgen.core.errors import UsageError
    from medgen.core.device import resolve_device
    from medgen.metrics.volumes import open_volume_set
    from medgen.families.classifier.train import LabelledVolumes

    if args.run is not None:
        raise UsageError("--run: this experiment trains its own class-conditional model; leave --run out")
    if args.synthetic_per_class is not None and args.synthetic_per_class < 1:
        raise UsageError(f"--synthetic-per-class {args.synthetic_per_class}: need at least 1")
    size = ws.scale.small_size if ws.uses_phantoms else ws.main_size
    column = args.label_column
    train_dir, heldout_dir = ws.datasets(size)

    # ---- real data: labels, the (optional) stratified subset, the test set
    train_labels, names = read_labels(train_dir, column)
    test_labels, test_names = read_labels(heldout_dir, column, names or None)
    if bool(test_names) != bool(names):
        raise UsageError(f"--label-column {column!r}: class numbers in one set, class names in the other "
                         f"({train_dir}, {heldout_dir})")
    labelled = [i for i, y in enumerate(train_labels) if y >= 0]
    present = sorted({train_labels[i] for i in labelled})
    if len(present) < 2:
        raise UsageError(f"--label-column {column!r}: the training set has {len(present)} class(es) "
                         f"({', '.join(map(str, present)) or 'none'}); a classifier needs at least 2")
    num_classes = max(max(present), max(test_labels)) + 1 if not names else len(names)
    base = (f"conditional-{size}" + ("" if column == "label" else f"-{column}")
            + ("" if args.conditioning == "discriminator" else f"-{args.conditioning}"))
    model_settings, hparams, conditioning_note = CONDITIONINGS[args.conditioning]
    if args.n_real is not None:
        subset = stratified_subset(train_labels, args.n_real, ws.seed)
        gan_data = write_subset_folder(train_dir, ws.root / "data" / f"{train_dir.name}-n{args.n_real}-seed{ws.seed}",
                                       subset, ws.seed)
        tag = f"{base}-n{args.n_real}-seed{ws.seed}"
    else:
        subset = labelled
        if len(labelled) < len(train_labels):  # the generator's trainer refuses unlabelled rows
            gan_data = write_subset_folder(train_dir, ws.root / "data" / f"{train_dir.name}-labelled", labelled, ws.seed)
        else:
            gan_data = train_dir
        tag = base
    real_vs = open_volume_set(train_dir, what="--data")
    real_items = LabelledVolumes(real_vs.subset(subset), [train_labels[i] for i in subset])
    test_idx = [i for i, y in enumerate(test_labels) if y >= 0]
    if not test_idx:
        raise UsageError(f"{heldout_dir}: no held-out volume has a class in column {column!r}")
    test_vs = open_volume_set(heldout_dir, what="--heldout").subset(test_idx)
    test_y = [test_labels[i] for i in test_idx]
    test_items = LabelledVolumes(test_vs, test_y)
    real_y = np.array(real_items.labels)
    real_counts = {c: int((real_y == c).sum()) for c in present}
    per_class = args.synthetic_per_class or max(real_counts.values())

    # ---- the class-conditional generator and its samples
    run_dir = ws.model(tag, size, num_classes=num_classes, label_column=column, data=gan_data,
                       model_settings=model_settings, hparams=hparams)
    gan_iters = checkpoint_iteration(run_dir)
    fake_sets = {c: _first(open_volume_set(ws.samples(run_dir, f"{tag}-class{c}", n=per_class, label=c),
                                           what="samples"), per_class) for c in present}
    for vs in fake_sets.values():
        vs.inherit(real_vs)  # generated .npy are in [-1, 1]: same modality and CT window as the training data
    from torch.utils.data import ConcatDataset

    fake_items = ConcatDataset([LabelledVolumes(fake_sets[c], [c] * len(fake_sets[c])) for c in present])

    settings = {"real only": real_items, "real + synthetic": ConcatDataset([real_items, fake_items])}

    # ---- classifiers
    device = str(resolve_device(ws.device))
    iters, jitter = ws.scale.classifier_iters, not args.no_jitter
    per_seed: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    seed_rows: list[dict[str, Any]] = []
    for seed in range(ws.scale.seeds):
        for setting, items in settings.items():
            print(f"\nclassifier: {setting}, seed {seed} ({len(items)} training volumes, {iters} iterations)", flush=True)
            result = _train_and_test(items, test_items, num_classes, size, iters, seed, jitter, device, ws.progress)
            per_seed[setting].append(result)
            seed_rows.append({"setting": setting, "seed": seed, "n_train": len(items),
                              **{k: result[k] for k in ("accuracy", "balanced_accuracy", "test_loss", "train_loss")}})
            print(f"  test accuracy {result['accuracy']:.3f}, balanced {result['balanced_accuracy']:.3f}", flush=True)

    # ---- tables
    n_synth = len(fake_items)
    rows = []
    for setting, results in per_seed.items():
        acc_mean, acc_std = mean_std([r["accuracy"] for r in results])
        bal_mean, bal_std = mean_std([r["balanced_accuracy"] for r in results])
        rows.append({"setting": setting, "n_real": len(real_items), "n_synthetic": n_synth if "synthetic" in setting else 0,
                     "accuracy_mean": acc_mean, "accuracy_std": acc_std,
                     "balanced_accuracy_mean": bal_mean, "balanced_accuracy_std": bal_std,
                     "accuracy_per_seed": "; ".join(f"{r['accuracy']:.3f}" for r in results)})
    test_counts = np.bincount(np.array(test_y), minlength=num_classes)
    chance, majority = 1.0 / len(present), float(test_counts.max() / test_counts.sum())
    diffs = [b["accuracy"] - a["accuracy"] for a, b in zip(per_seed["real only"], per_seed["real + synthetic"])]
    diff_mean, diff_std = mean_std(diffs)
    gain = rows[1]["accuracy_mean"] - rows[0]["accuracy_mean"]
    spread = max(v for v in (rows[0]["accuracy_std"], rows[1]["accuracy_std"], 0.0) if not math.isnan(v))
    if ws.scale.seeds < 2:
        verdict = "one seed only: no spread to judge the difference by."
    elif abs(gain) <= spread or (not math.isnan(diff_std) and abs(diff_mean) <= diff_std):
        verdict = (f"the difference ({gain:+.3f}) is within the seed spread (std up to {spread:.3f}; paired "
                   f"difference {diff_mean:+.3f} ± {diff_std:.3f}): no evidence that the synthetic volumes help or hurt.")
    else:
        verdict = (f"the difference ({gain:+.3f}; paired {diff_mean:+.3f} ± {diff_std:.3f}) exceeds the seed spread "
                   f"(std up to {spread:.3f}), over {ws.scale.seeds} seeds only.")
    phantom_size = max((*ws.scale.sizes, ws.scale.size, ws.scale.small_size))
    label_what = ("the phantoms' emphysema severity class (0: <5 %, 1: 5-10 %, 2: 10-20 %, 3: ≥20 % of the lung "
                  f"below -950 HU, measured on the {phantom_size}³ phantom before any downsampling)"
                  if ws.uses_phantoms and column == "label" else f"manifest column {column!r}")
    missing = [c for c in range(num_classes) if test_counts[c] and c not in present]
    class_text = ", ".join(f"{names[c] if names else c}: {real_counts[c]}" for c in present)
    test_text = ", ".join(f"{names[c] if names else c}: {int(test_counts[c])}" for c in range(num_classes) if test_counts[c])
    notes = [
        f"Label: {label_what}; K = {len(present)} classes in the training set. Real training volumes per class: "
        f"{class_text}" + (f" (class-stratified subset of {args.n_real}, seed {ws.seed})." if args.n_real is not None else "."),
        f"Test set: {len(test_y)} real held-out volumes ({test_text}). Chance level: 1/K = {chance:.3f}; "
        f"always predicting the test set's majority class gives accuracy {majority:.3f} (balanced accuracy 1/K)."
        + (f" Test classes absent from training ({', '.join(str(names[c] if names else c) for c in missing)}) "
           "can only be misclassified." if missing else ""),
        (f"Synthetic: {per_class} volumes per class from a class-conditional HA-GAN ({ws.scale.hagan_preset} preset, {size}³, "
         f"{gan_iters} iterations, trained on the same {len(real_items)} real volumes; --conditioning "
         f"{args.conditioning}: {conditioning_note}); volume i of every class "
         "is drawn from the same latent z, so the classes differ only by the class input."),
        (f"Classifier: the 3D CNN of medgen.families.classifier.network (width 16), {iters} iterations of batch {CLASSIFIER_BATCH}, "
         f"AdamW lr {CLASSIFIER_LR:g} with cosine decay, {'shift and intensity jitter' if jitter else 'no jitter'}; "
         "identical in both settings except the training data; the final weights are tested (no model selection). "
         f"Seeds 0..{ws.scale.seeds - 1} set the initial weights (the same in both settings), batch order and jitter."),
        "std: sample standard deviation over seeds (ddof=1). balanced accuracy: mean recall over the test classes.",
        f"Verdict: {verdict}",
    ]
    out.write_table(rows, ("setting", "n_real", "n_synthetic", "accuracy_mean", "accuracy_std",
                           "balanced_accuracy_mean", "balanced_accuracy_std", "accuracy_per_seed"),
                    title="Class-conditional synthetic volumes as data augmentation", notes=notes, digits=3)
    out.write_table(seed_rows, ("setting", "seed", "n_train", "accuracy", "balanced_accuracy", "test_loss", "train_loss"),
                    title="Data augmentation: every classifier", stem="augmentation-seeds",
                    notes=["test_loss: mean cross-entropy on the held-out set; train_loss: over the classifier's run."])

    # ---- did the generator learn the label? measured emphysema per class
    emphysema: dict[str, Any] = {}
    is_ct = real_vs.modality == "ct"
    if is_ct:
        real_emph = summarise_by_class(emphysema_percentages(real_items.volumes, ws.progress, "emphysema real"), real_y)
        fake_emph = {c: summarise_by_class(emphysema_percentages(fake_sets[c], ws.progress, f"emphysema class {c}"),
                                           [c] * len(fake_sets[c]))[c] for c in present}
        emph_rows = [{"class": names[c] if names else c, "n_real": real_emph[c]["n"],
                      "real_emphysema_pct_mean": real_emph[c]["mean"], "real_emphysema_pct_std": real_emph[c]["std"],
                      "n_synthetic": fake_emph[c]["n"], "synthetic_emphysema_pct_mean": fake_emph[c]["mean"],
                      "synthetic_emphysema_pct_std": fake_emph[c]["std"]} for c in present]
        synth_means = [fake_emph[c]["mean"] for c in present]
        real_means = [real_emph[c]["mean"] for c in present]
        known = all(math.isfinite(m) for m in synth_means + real_means)
        ordered = known and all(a <= b for a, b in itertools.pairwise(synth_means))
        emph_notes = [
            ("Emphysema %: share of the lung below -950 HU (LAA-950) measured by medgen.metrics.anatomy.ct_anatomy on "
             f"the {size}³ volumes themselves (real: the classifiers' real training volumes), so real and synthetic "
             "go through the same protocol; std: population std (ddof=0). Volumes without a detected lung are left out."),
            (f"Partial volume at {size}³ can move the measured % away from the label's thresholds (which apply to "
             "the label's own measurement); compare the synthetic column with the real one, not with the thresholds."),
            "n_synthetic counts the synthetic volumes with a detected lung.",
            ("The synthetic means " + ("rise with the class" if ordered else "do not rise with the class")
             if known else "Some sets have no volume with a detectable lung, so the classes cannot be compared")
            + f" (real: {', '.join(f'{m:.1f}' for m in real_means)}; synthetic: {', '.join(f'{m:.1f}' for m in synth_means)}).",
        ]
        out.write_table(emph_rows, ("class", "n_real", "real_emphysema_pct_mean", "real_emphysema_pct_std", "n_synthetic",
                                    "synthetic_emphysema_pct_mean", "synthetic_emphysema_pct_std"),
                        title="Measured emphysema % per class: real vs class-conditional synthetic",
                        stem="augmentation-emphysema", notes=emph_notes, digits=3)
        emphysema = {"rows": emph_rows, "synthetic_ordered_by_class": ordered}

    # ---- figures
    fig_path = out.path("augmentation.png")
    _accuracy_figure(fig_path, per_seed, chance, majority)
    out.add_figure(fig_path)
    first_real = {c: real_items.volumes[int(np.flatnonzero(real_y == c)[0])] for c in present}
    shown = {c: [fake_sets[c][j] for j in range(min(SAMPLES_PER_CLASS_SHOWN, len(fake_sets[c])))] for c in present}
    if is_ct:
        from medgen.data.preprocess import denormalize_ct

        hu_window = real_vs.hu_window or (-1024.0, 600.0)
        first_real = {c: denormalize_ct(v, *hu_window) for c, v in first_real.items()}
        shown = {c: [denormalize_ct(v, *hu_window) for v in vols] for c, vols in shown.items()}
        window, unit = LUNG_WINDOW_HU, "HU"
    else:
        window, unit = (-1.0, 1.0), "(normalised)"
    samples_path = out.path("conditional-samples.png")
    _samples_figure(samples_path, first_real, shown, window, unit, names)
    out.add_figure(samples_path)

    return {
        "label_column": column, "num_classes": num_classes, "classes_present": present, "size": size,
        "n_real": len(real_items), "n_synthetic": n_synth, "synthetic_per_class": per_class,
        "classifier_iters": iters, "jitter": jitter, "conditional_run": str(run_dir), "gan_iterations": gan_iters,
        "chance": chance, "majority_rate": majority, "rows": rows, "per_seed": seed_rows,
        "paired_difference": {"mean": diff_mean, "std": diff_std}, "verdict": verdict, "emphysema": emphysema,
        "confusion": {s: [r["confusion"] for r in rs] for s, rs in per_seed.items()},
    }

