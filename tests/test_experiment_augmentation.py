"""``medgen experiment augmentation``: smoke run end to end, the stratified subset, the statistics."""

from __future__ import annotations

import csv
import shutil
from collections import Counter

import numpy as np
import pytest

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.experiments.augmentation import (
    balanced_accuracy,
    emphysema_percentages,
    stratified_counts,
    stratified_subset,
    summarise_by_class,
    write_subset_folder,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------- stratified subset
def test_stratified_counts_follow_the_class_shares():
    # Shares 40/20/10/30 % of 20 items: exact quotas.
    assert stratified_counts({0: 40, 1: 20, 2: 10, 3: 30}, 20) == {0: 8, 1: 4, 2: 2, 3: 6}
    # Quotas 3.18, 1.36, 0.45: floors 3, 1, 0; the empty class gets its one item.
    assert stratified_counts({0: 7, 1: 3, 2: 1}, 5) == {0: 3, 1: 1, 2: 1}
    # Quotas 6.67, 3.33: largest remainder gives the 10th item to class 0.
    assert stratified_counts({0: 20, 1: 10}, 10) == {0: 7, 1: 3}
    # Quotas 3.88, 0.08, 0.04: one per class forces class 0 down to 2.
    assert stratified_counts({0: 97, 1: 2, 2: 1}, 4) == {0: 2, 1: 1, 2: 1}
    with pytest.raises(UsageError):
        stratified_counts({0: 5, 1: 5, 2: 5}, 2)  # fewer items than classes
    with pytest.raises(UsageError):
        stratified_counts({0: 5, 1: 5}, 11)  # more items than there are


def test_stratified_subset_proportions_and_determinism():
    rng = np.random.default_rng(3)
    labels = np.array([0] * 40 + [1] * 20 + [2] * 10 + [3] * 30 + [-1] * 7)
    rng.shuffle(labels)
    subset = stratified_subset(labels.tolist(), 20, seed=5)
    assert subset == sorted(set(subset)) and len(subset) == 20
    assert Counter(labels[subset].tolist()) == {0: 8, 1: 4, 2: 2, 3: 6}  # the class shares, no unlabelled item
    assert stratified_subset(labels.tolist(), 20, seed=5) == subset  # same seed, same subset
    others = {tuple(stratified_subset(labels.tolist(), 20, seed=s)) for s in range(6, 11)}
    assert len(others - {tuple(subset)}) >= 4  # other seeds draw other volumes
    for other in others:
        assert Counter(labels[list(other)].tolist()) == {0: 8, 1: 4, 2: 2, 3: 6}
    # Over many seeds every volume of a class is equally likely: class 2 (10 volumes, 2 taken) about 20 % each.
    hits = Counter(i for s in range(400) for i in stratified_subset(labels.tolist(), 20, seed=s) if labels[i] == 2)
    rates = np.array([hits[i] / 400 for i in np.flatnonzero(labels == 2)])
    assert np.allclose(rates, 0.2, atol=0.08)


# ---------------------------------------------------------------------- statistics
def test_balanced_accuracy_matches_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    rng = np.random.default_rng(0)
    y_true = rng.choice([0, 1, 3], size=50, p=[0.6, 0.3, 0.1])  # class 2 never true, but predicted
    y_pred = np.where(rng.random(50) < 0.6, y_true, rng.integers(0, 4, 50))
    confusion = confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3])
    with pytest.warns(UserWarning):  # scikit-learn warns about the predicted class absent from y_true
        expected = balanced_accuracy_score(y_true, y_pred)
    assert balanced_accuracy(confusion) == pytest.approx(expected, abs=1e-12)


def test_emphysema_summary_per_class_matches_planted_values(tmp_path, make_ct):
    from medgen.data.preprocess import normalize_ct
    from medgen.metrics.volumes import open_volume_set

    rng = np.random.default_rng(1)
    shape, blank_bottom, blank_top = (24, 20, 16), 2, 3
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    lung2d = ((x - 0.3) / 0.25) ** 2 + (y / 0.35) ** 2 <= 1  # the lung of make_ct
    lung = np.zeros(shape, dtype=bool)
    lung[..., blank_bottom : shape[2] - blank_top] = lung2d[..., None]
    labels = [0, 0, 1, 1, 1, 2]
    fractions = [0.02, 0.05, 0.12, 0.15, 0.10, 0.30]
    expected = []
    for i, frac in enumerate(fractions):
        vol = make_ct(shape, seed=i, blank_bottom=blank_bottom, blank_top=blank_top)
        lung_idx = np.flatnonzero(lung)
        holes = rng.choice(lung_idx, round(frac * lung_idx.size), replace=False)
        vol.flat[holes] = -1000.0  # emphysema: below -950 HU; the rest of the lung is about -850 HU
        expected.append(100.0 * holes.size / lung_idx.size)
        np.save(tmp_path / f"v{i}.npy", normalize_ct(vol))
    vs = open_volume_set(tmp_path, modality="ct")
    values = emphysema_percentages(vs)
    assert values == pytest.approx(expected, abs=1e-9)
    summary = summarise_by_class(values, labels)
    expected = np.array(expected)
    for c in (0, 1, 2):
        mine = expected[np.array(labels) == c]
        assert summary[c]["n"] == mine.size
        assert summary[c]["mean"] == pytest.approx(mine.mean(), abs=1e-9)
        assert summary[c]["std"] == pytest.approx(mine.std(), abs=1e-9)
    assert summary[1]["mean"] == pytest.approx(100 * np.mean([0.12, 0.15, 0.10]), abs=0.2)
    # NaN (no lung found) is left out of n, mean and std.
    nan_summary = summarise_by_class([1.0, np.nan, 3.0], [0, 0, 0])
    assert nan_summary[0] == {"n": 2, "mean": 2.0, "std": 1.0}


# ---------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("augmentation")
    work, out = root / "work", root / "out"
    code = main(["experiment", "augmentation", "--scale", "smoke", "--work", str(work), "--out", str(out),
                 "--no-progress"])
    assert code == 0
    return work, out


@pytest.mark.slow
def test_smoke_run_writes_both_settings_and_figures(smoke):
    work, out = smoke
    train_labels = [int(r["label"]) for r in _rows(work / "data" / "train-32" / "manifest.csv")]
    counts = Counter(train_labels)
    rows = _rows(out / "augmentation.csv")
    assert [r["setting"] for r in rows] == ["real only", "real + synthetic"]
    assert [int(r["n_real"]) for r in rows] == [len(train_labels)] * 2
    assert [int(r["n_synthetic"]) for r in rows] == [0, max(counts.values()) * len(counts)]
    seeds = _rows(out / "augmentation-seeds.csv")
    assert len(seeds) == 2 * 2  # two settings, the smoke scale's two seeds
    for row in rows:
        mine = [s for s in seeds if s["setting"] == row["setting"]]
        assert [int(s["seed"]) for s in mine] == [0, 1]
        for key in ("accuracy", "balanced_accuracy"):
            per_seed = np.array([float(s[key]) for s in mine])
            assert np.all((per_seed >= 0) & (per_seed <= 1))
            assert float(row[f"{key}_mean"]) == pytest.approx(per_seed.mean(), abs=1e-12)
            assert float(row[f"{key}_std"]) == pytest.approx(per_seed.std(ddof=1), abs=1e-12)
        test_n = len(_rows(work / "data" / "heldout-32" / "manifest.csv"))
        for s in mine:  # accuracy is a whole number of the held-out volumes
            assert float(s["accuracy"]) * test_n == pytest.approx(round(float(s["accuracy"]) * test_n), abs=1e-9)
        assert row["accuracy_per_seed"] == "; ".join(f"{float(s['accuracy']):.3f}" for s in mine)
    md = (out / "augmentation.md").read_text(encoding="utf-8")
    assert "medgen experiment augmentation --scale smoke" in md and "Chance level: 1/K" in md
    for name in ("augmentation.png", "conditional-samples.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    for c in counts:  # the class-conditional samples the classifier saw
        assert len(list((work / "samples" / f"conditional-32-classifier-class{c}").glob("*.npy"))) == max(counts.values())
    # The default generator obeys the class through a separate classifier C and sees the lung window.
    import yaml

    config = yaml.safe_load((work / "runs" / "conditional-32-classifier" / "config.yaml").read_text())
    assert config["model"]["class_conditioning"] == "classifier" and len(config["model"]["d_windows"]) == 1
    assert (config["hparams"]["class_loss"], config["hparams"]["class_weight"]) == ("per-head", 0.3)
    assert config["hparams"]["c_augment"] is True and config["hparams"]["c_steps"] == 4
    assert "--conditioning classifier: D unconditional" in md


@pytest.mark.slow
def test_smoke_emphysema_table_measures_the_real_volumes(smoke):
    from medgen.data.preprocess import denormalize_ct
    from medgen.metrics.anatomy import ct_anatomy

    work, out = smoke
    data = work / "data" / "train-32"
    manifest = _rows(data / "manifest.csv")
    direct: dict[int, list[float]] = {}
    for r in manifest:
        hu = denormalize_ct(np.load(data / r["file"]).astype(np.float32), -1024.0, 600.0)
        direct.setdefault(int(r["label"]), []).append(ct_anatomy(hu, (1.0, 1.0, 1.0))["emphysema_pct"])  # % needs no voxel size
    table = {int(r["class"]): r for r in _rows(out / "augmentation-emphysema.csv")}
    assert sorted(table) == sorted(direct)
    for c, values in direct.items():
        assert int(table[c]["n_real"]) == len(values)
        assert float(table[c]["real_emphysema_pct_mean"]) == pytest.approx(np.mean(values), abs=1e-9)


@pytest.mark.slow
def test_n_real_subset_folder_is_a_preprocessed_set_of_the_chosen_volumes(smoke, tmp_path):
    from medgen.data.dataset import VolumeDataset

    work, _ = smoke
    source = work / "data" / "train-32"
    rows = _rows(source / "manifest.csv")
    labels = [int(r["label"]) for r in rows]
    chosen = stratified_subset(labels, len(set(labels)), seed=0)  # one volume per class
    dest = write_subset_folder(source, tmp_path / "subset", chosen, seed=0)
    assert _rows(dest / "manifest.csv") == [rows[i] for i in chosen]
    for i in chosen:
        assert (dest / rows[i]["file"]).read_bytes() == (source / rows[i]["file"]).read_bytes()
    assert (dest / "preprocess.json").read_text() == (source / "preprocess.json").read_text()
    ds = VolumeDataset(dest, split="all", label_column="label")  # what medgen train reads
    assert sorted(ds.labels) == sorted(set(labels))
    stamp = (dest / "manifest.csv").stat().st_mtime_ns
    write_subset_folder(source, dest, chosen, seed=0)
    assert (dest / "manifest.csv").stat().st_mtime_ns == stamp  # same subset: reused
    other = [i for i in range(len(rows)) if i not in chosen][:2]
    write_subset_folder(source, dest, other, seed=1)
    assert [r["id"] for r in _rows(dest / "manifest.csv")] == [rows[i]["id"] for i in other]
    assert len(list((dest / "volumes").glob("*.npy"))) == 2  # the old subset's volumes are gone


@pytest.mark.slow
def test_one_class_and_missing_column_are_usage_errors(smoke, tmp_path, capsys):
    work, _ = smoke
    data, heldout = tmp_path / "data", work / "data" / "heldout-32"
    shutil.copytree(work / "data" / "train-32", data)
    rows = _rows(data / "manifest.csv")
    with open(data / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": "1"} for r in rows)
    common = ["experiment", "augmentation", "--scale", "smoke", "--work", str(tmp_path / "work"),
              "--out", str(tmp_path / "out"), "--data", str(data), "--heldout", str(heldout), "--no-progress"]
    assert main(common) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(common + ["--label-column", "stage"]) == 2
    assert "no such column" in capsys.readouterr().err
    assert not (tmp_path / "work" / "runs").exists()  # nothing trained


def test_the_classifier_conditionings_are_the_recipes_measured_side_by_side():
    """`--conditioning classifier` and `classifier-diverse` train exactly the recipes table's rows that chose them."""
    from medgen.experiments.augmentation import CONDITIONINGS
    from medgen.experiments.recipes import CONDITIONAL_VARIANTS

    by_key = {v.key: v for v in CONDITIONAL_VARIANTS}
    for name, key in (("classifier", "classifier-lungwindow-caug-c4-compact"),
                      ("classifier-diverse", "classifier-lungwindow-caug-c4-ms-compact")):
        model, hparams, _ = CONDITIONINGS[name]
        assert (model, hparams) == (by_key[key].model, by_key[key].hparams)
    assert CONDITIONINGS["classifier-diverse"][1]["diversity_weight"] == 0.3
    assert "diversity_weight" not in CONDITIONINGS["classifier"][1]
