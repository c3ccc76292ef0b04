"""Volume classifier: learning a separable task, best-epoch selection, safetensors round trip,
``medgen train-classifier`` and the Inception Score through it in ``medgen evaluate``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.data.dataset import split_ids
from medgen.core.errors import InputError
from medgen.metrics.inception_score import inception_score
from medgen.families.classifier.network import (
    INFO_FILE,
    WEIGHTS_FILE,
    VolumeClassifier,
    class_probabilities,
    load_classifier,
    save_classifier,
)

SIZE = 16
LEVELS = (-0.5, 0.15, 0.8)  # class k: a blob of intensity LEVELS[k] on a -1 background


def blob(rng: np.random.Generator, label: int, n: int = SIZE) -> np.ndarray:
    """A noisy ball of radius 3–4 voxels at a random place; its intensity is the class."""
    g = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij")).astype(np.float32)
    centre, radius = rng.uniform(4, n - 4, 3), rng.uniform(3, 4)
    vol = np.full((n,) * 3, -1.0, np.float32)
    vol[((g - centre[:, None, None, None]) ** 2).sum(0) < radius**2] = LEVELS[label]
    return np.clip(vol + rng.normal(0, 0.1, vol.shape), -1, 1).astype(np.float32)


def write_preprocessed(root: Path, volumes: list[np.ndarray], labels: list[int] | None) -> Path:
    (root / "volumes").mkdir(parents=True)
    rows = []
    for i, v in enumerate(volumes):
        np.save(root / "volumes" / f"v{i:03d}.npy", v.astype(np.float16))
        row = {"id": f"v{i:03d}", "source": "test", "orig_shape": "16x16x16", "orig_spacing": "1x1x1", "spacing": "1x1x1",
               "file": f"volumes/v{i:03d}.npy"}
        if labels is not None:
            row["label"] = labels[i]
        rows.append(row)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "preprocess.json").write_text(json.dumps({"modality": "ct", "size": SIZE, "hu_window": [-1024.0, 600.0]}))
    return root


def probabilities_by_hand(model: VolumeClassifier, volumes: list[np.ndarray]) -> np.ndarray:
    """Independent of class_probabilities: one volume at a time, softmax in numpy."""
    rows = []
    with torch.no_grad():
        for v in volumes:
            logits = model.eval()(torch.from_numpy(np.asarray(v, np.float32))[None, None]).double().numpy()[0]
            e = np.exp(logits - logits.max())
            rows.append(e / e.sum())
    return np.array(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classifier trained through the CLI on 60 labelled blobs (48 train, 6 val, 6 test)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("classifier")
    rng = np.random.default_rng(0)
    labels = [i % 3 for i in range(60)]
    data = write_preprocessed(base / "data", [blob(rng, k) for k in labels], labels)
    out = base / "clf"
    code = main(["train-classifier", str(data), "--out", str(out), "--epochs", "20", "--batch", "6", "--lr", "1e-2",
                 "--width", "8", "--seed", "0", "--no-progress"])
    assert code == 0
    return {"data": data, "out": out, "labels": labels, "base": base}


def test_classifier_learns_a_separable_task_and_reports_true_accuracies(trained):
    model, info = load_classifier(trained["out"])
    assert (info["num_classes"], info["in_size"], info["width"], info["label_column"]) == (3, SIZE, 8, "label")
    assert info["classes"] == ["0", "1", "2"]
    # Fresh volumes never seen in training: at least 90 % right.
    rng = np.random.default_rng(123)
    fresh_labels = [i % 3 for i in range(30)]
    probs = probabilities_by_hand(model, [blob(rng, k) for k in fresh_labels])
    assert (probs.argmax(1) == np.array(fresh_labels)).mean() >= 0.9
    # The stored val/test accuracies are those of the kept weights on the same split as `medgen train`.
    split = split_ids([f"v{i:03d}" for i in range(60)], seed=0)
    for name in ("val", "test"):
        ids = split[name]
        vols = [np.load(trained["data"] / "volumes" / f"{i}.npy").astype(np.float32) for i in ids]
        truth = np.array([trained["labels"][int(i[1:])] for i in ids])
        acc = (probabilities_by_hand(model, vols).argmax(1) == truth).mean()
        assert info[f"{name}_accuracy"] == pytest.approx(acc)
        assert info["split"][f"n_{name}"] == len(ids) == 6
    assert sum(map(sum, info["test_confusion"])) == 6
    # The kept epoch is the best on validation accuracy (ties to the lower validation loss).
    hist = info["history"]
    best = max(hist, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert info["training"]["best_epoch"] == best["epoch"]
    assert info["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert len(hist) == 20


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = VolumeClassifier(num_classes=4, in_size=16, width=4)
    with torch.no_grad():  # non-default normalisation statistics, so that they must be saved too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(3, 1, 16, 16, 16)
    save_classifier(tmp_path, model, {"label_column": "stage", "classes": ["a", "b", "c", "d"]})
    loaded, info = load_classifier(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info["label_column"] == "stage" and info["classes"] == ["a", "b", "c", "d"]
    assert loaded.architecture() == model.architecture()
    # A description that does not belong to these weights is refused.
    meta = json.loads((tmp_path / INFO_FILE).read_text())
    (tmp_path / INFO_FILE).write_text(json.dumps({**meta, "width": 8}))
    with pytest.raises(InputError, match="do not match"):
        load_classifier(tmp_path)
    # Same architecture, weights of another run: caught by the recorded SHA-256.
    (tmp_path / INFO_FILE).write_text(json.dumps(meta))
    other = VolumeClassifier(num_classes=4, in_size=16, width=4)
    save_classifier(tmp_path / "other", other, {})
    (tmp_path / "other" / WEIGHTS_FILE).replace(tmp_path / WEIGHTS_FILE)
    with pytest.raises(InputError, match="SHA-256 differs"):
        load_classifier(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(InputError, match="not a classifier folder"):
        load_classifier(tmp_path)


def test_volumes_of_another_size_are_area_resized_to_the_input():
    torch.manual_seed(1)
    model = VolumeClassifier(num_classes=3, in_size=16, width=4).eval()
    big = np.random.default_rng(2).uniform(-1, 1, (32, 32, 32)).astype(np.float32)
    # Area resizing 32 -> 16 is a 2x2x2 block mean: compare with the block mean done by hand.
    small = big.reshape(16, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))
    got = class_probabilities(model, [big, small], batch_size=1)
    np.testing.assert_allclose(got[0], got[1], rtol=1e-5)
    np.testing.assert_allclose(got[1], probabilities_by_hand(model, [small])[0], rtol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1.0)


def test_augmentation_flips_only_left_right_and_shifts_little():
    from medgen.families.classifier.augment import INTENSITY_OFFSET_JITTER, INTENSITY_SCALE_JITTER
    from medgen.families.classifier.augment import augment_batch as _augment

    x = torch.rand(16, 1, 16, 16, 16) * 2 - 1
    # flip_lr alone: each volume is itself or its mirror along x (RAS+ left-right), both occur.
    out = _augment(x, torch.Generator().manual_seed(0), flip_lr=True, jitter=False)
    same = [torch.equal(o, v) for o, v in zip(out, x)]
    mirrored = [torch.equal(o, v.flip(1)) for o, v in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    # Shift + intensity jitter: one bright voxel on a -1 background lands at most 16 // 16 = 1
    # voxel away per axis, and background and peak change by the jitter bounds at most.
    spot = torch.full((8, 1, 16, 16, 16), -1.0)
    spot[:, :, 7, 8, 9] = 1.0
    out = _augment(spot, torch.Generator().manual_seed(1), flip_lr=False, jitter=True)
    bound = INTENSITY_SCALE_JITTER + INTENSITY_OFFSET_JITTER + 1e-6
    moved = set()
    for o in out[:, 0]:
        peak = np.unravel_index(int(o.argmax()), o.shape)
        assert all(abs(int(p) - q) <= 1 for p, q in zip(peak, (7, 8, 9)))
        moved.add(tuple(int(p) for p in peak))
        assert abs(float(o.max()) - 1) <= bound and abs(float(o.min()) + 1) <= bound
    assert len(moved) > 1


def _evaluate_is(trained, name: str, labels: list[int], seed: int) -> tuple[dict, np.ndarray]:
    folder = trained["base"] / name
    folder.mkdir()
    rng = np.random.default_rng(seed)
    vols = [blob(rng, k) for k in labels]
    for i, v in enumerate(vols):
        np.save(folder / f"g{i:03d}.npy", v)
    out = trained["base"] / f"{name}.json"
    code = main(["evaluate", "--real", str(trained["data"]), "--fake", str(folder), "--metrics", "is", "--classifier",
                 str(trained["out"]), "--is-splits", "5", "--out", str(out), "--no-progress", "--no-figures", "--device", "cpu"])
    assert code == 0
    return json.loads(out.read_text())["metrics"]["is"], np.array(vols)


def test_inception_score_through_the_classifier(trained, capsys):
    model, info = load_classifier(trained["out"])
    real = [np.load(trained["data"] / "volumes" / f"v{i:03d}.npy").astype(np.float32) for i in range(60)]
    p_real = probabilities_by_hand(model, real)

    # One class only: no diversity, IS about 1.
    one, vols = _evaluate_is(trained, "one_class", [1] * 20, seed=7)
    p_one = probabilities_by_hand(model, list(vols))
    assert one["value"] == pytest.approx(inception_score(p_one, splits=5)[0], rel=1e-6)
    assert one["value"] < 1.1

    # Balanced and confidently classified (every part of 5 holds all classes): IS about K = 3.
    bal, vols = _evaluate_is(trained, "balanced", [i % 3 for i in range(30)], seed=8)
    p_bal = probabilities_by_hand(model, list(vols))
    mean, std = inception_score(p_bal, splits=5)
    assert (bal["value"], bal["std"]) == pytest.approx((mean, std), rel=1e-6, abs=1e-9)
    assert 0.8 * 3 < bal["value"] <= 3
    # The real set is the reference: its IS and both predicted-class histograms.
    assert bal["details"]["real"]["mean"] == pytest.approx(inception_score(p_real, splits=5)[0], rel=1e-6)
    counts = bal["details"]["predicted_classes"]
    assert counts["fake"] == np.bincount(p_bal.argmax(1), minlength=3).tolist()
    assert counts["real"] == np.bincount(p_real.argmax(1), minlength=3).tolist()
    assert bal["settings"]["classifier_test_accuracy"] == info["test_accuracy"]
    assert (bal["n_fake"], bal["n_real"]) == (30, 60)
    printed = capsys.readouterr().out
    assert "is (real volumes, reference)" in printed and "comparable only with IS from this same classifier" in printed


def test_usage_errors_exit_2_with_one_line(trained, tmp_path, capsys):
    rng = np.random.default_rng(3)
    unlabelled = write_preprocessed(tmp_path / "unlabelled", [blob(rng, 0) for _ in range(4)], None)
    one_class = write_preprocessed(tmp_path / "one_class", [blob(rng, 0) for _ in range(4)], [2] * 4)
    cases = [
        (["train-classifier", str(unlabelled), "--out", str(tmp_path / "a")], "no column 'label'"),
        (["train-classifier", str(one_class), "--out", str(tmp_path / "b")], "1 class(es)"),
        (["evaluate", "--real", str(trained["data"]), "--fake", str(one_class), "--metrics", "is", "--classifier",
          str(tmp_path / "missing"), "--out", str(tmp_path / "c.json")], "not a classifier folder"),
        (["evaluate", "--real", str(trained["data"]), "--fake", str(one_class), "--metrics", "is", "--classifier",
          str(trained["out"]), "--is-probs", str(tmp_path / "p.npy"), "--out", str(tmp_path / "d.json")], "not both"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c.json").exists()


# What classifier.json holds (readers: medgen evaluate --classifier, the experiments' reuse check).
INFO_KEYS = {
    "format", "num_classes", "in_size", "width", "dropout", "weights_sha256", "medgen_version", "created", "data",
    "label_column", "classes", "input", "split", "training", "val_accuracy", "test_accuracy", "test_confusion",
    "history", "notes",
}


def test_command_writes_the_same_info_as_the_library_call(trained, tmp_path, capsys):
    from medgen.families.classifier.fit import train_on_folder

    info = json.loads((trained["out"] / INFO_FILE).read_text())
    assert set(info) == INFO_KEYS
    assert set(info["split"]) == {"seed", "fractions", "n_train", "n_val", "n_test"}
    assert set(info["training"]) == {"epochs", "batch", "lr", "weight_decay", "seed", "augment", "flip_lr", "best_epoch"}
    assert (info["data"], info["training"]["epochs"], info["training"]["batch"]) == (str(trained["data"]), 20, 6)

    # The library call behind the command: same file, returned with the folder; same printed notes.
    got = train_on_folder(trained["data"], tmp_path / "clf", epochs=1, batch=6, width=4, progress=False)
    assert got["folder"] == tmp_path / "clf"
    assert {k: v for k, v in got.items() if k != "folder"} == json.loads((tmp_path / "clf" / INFO_FILE).read_text())
    assert set(got) == INFO_KEYS | {"folder"}
    assert got["split"] == info["split"] and got["in_size"] == SIZE

    # The command prints its summary from that info.
    capsys.readouterr()
    assert main(["train-classifier", str(trained["data"]), "--out", str(tmp_path / "clf"), "--epochs", "1",
                 "--batch", "6", "--width", "4", "--no-progress", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3].startswith(f"classes (label): 0, 1, 2; input {SIZE}³; best epoch 1 of 1")
    assert lines[-2].startswith("accuracy: validation ") and lines[-2].endswith(" (n=6)")
    assert " (n=6), test " in lines[-2]
    assert lines[-1] == f"wrote {tmp_path / 'clf' / WEIGHTS_FILE} and {tmp_path / 'clf' / INFO_FILE}"
