"""The experiments workspace's domain classifier (``Workspace.classifier``) and the Inception Score through it."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from medgen.experiments.workspace import IS_COLUMNS, SCALES, Workspace, metric_row
from medgen.families.classifier.network import INFO_FILE, WEIGHTS_FILE

SIZE = 16


def rewrite_labels(folder, label):
    """Give every volume of ``folder`` the label ``label`` (None: drop the label column)."""
    path = folder / "manifest.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if label is None:
            del row["label"]
        else:
            row["label"] = label
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def data(tmp_path):
    from toy_volumes import make_dataset

    torch.set_num_threads(1)
    return make_dataset(tmp_path / "data", n=10, size=SIZE)  # labels 0/1 alternating


def test_classifier_is_trained_once_then_reused(tmp_path, data, capsys):
    ws = Workspace(tmp_path / "work", SCALES["smoke"], data=data, heldout=data, device="cpu", progress=False)
    out = ws.classifier(SIZE)
    assert out == tmp_path / "work" / "classifiers" / f"label-{SIZE}"
    assert (out / WEIGHTS_FILE).is_file()
    info = json.loads((out / INFO_FILE).read_text())
    # Smoke scale: 2 classifier steps of 8 volumes over the 8 volumes of the train split = 2 epochs.
    assert info["split"]["n_train"] == 8
    assert info["training"]["epochs"] == 2 and info["training"]["augment"] is True and info["training"]["seed"] == 0
    command = (f"medgen train-classifier {data} --out {out} --label-column label --epochs 2 --augment --seed 0 "
               "--device cpu --no-progress")
    assert ws.log == [command]
    printed = capsys.readouterr().out
    assert f"$ {command}" in printed and "test accuracy" in printed

    # Asked again (also by another workspace object on the same folder): reused, not retrained.
    mtime = (out / WEIGHTS_FILE).stat().st_mtime_ns
    again = Workspace(tmp_path / "work", SCALES["smoke"], data=data, heldout=data, device="cpu", progress=False)
    assert again.classifier(SIZE) == out
    printed = capsys.readouterr().out
    assert "already, reused" in printed and "$ medgen train-classifier" not in printed
    assert (out / WEIGHTS_FILE).stat().st_mtime_ns == mtime
    assert again.log == [command]  # recorded all the same, so that the experiment's record says how to make it

    # Another seed is another classifier: retrained in place.
    other = Workspace(tmp_path / "work", SCALES["smoke"], data=data, heldout=data, device="cpu", progress=False, seed=1)
    assert other.classifier(SIZE) == out
    assert "$ medgen train-classifier" in capsys.readouterr().out
    assert json.loads((out / INFO_FILE).read_text())["training"]["seed"] == 1


def test_no_classifier_without_the_label_column_or_two_classes(tmp_path, data, capsys):
    ws = Workspace(tmp_path / "work", SCALES["smoke"], data=data, heldout=data, device="cpu", progress=False)
    assert ws.classifier(SIZE, label_column="stage") is None
    assert "no manifest column 'stage'" in capsys.readouterr().out
    rewrite_labels(data, None)
    assert ws.classifier(SIZE) is None
    assert "no manifest column 'label'" in capsys.readouterr().out
    rewrite_labels(data, "1")
    assert ws.classifier(SIZE) is None
    assert "holds 1 class(es)" in capsys.readouterr().out
    assert ws.log == [] and not (tmp_path / "work" / "classifiers").exists()


def test_evaluate_with_the_classifier_reports_is(tmp_path, data, capsys):
    from toy_volumes import make_dataset

    ws = Workspace(tmp_path / "work", SCALES["smoke"], data=data, heldout=data, device="cpu", progress=False)
    clf = ws.classifier(SIZE)
    fake = make_dataset(tmp_path / "fake", n=6, size=SIZE, seed=3)
    out_json = tmp_path / "eval" / "is.json"
    capsys.readouterr()
    report = ws.evaluate(data, fake, out_json, metrics="is", classifier=clf)
    assert f"--metrics is --classifier {clf}" in capsys.readouterr().out
    entry = report["metrics"]["is"]
    assert entry["settings"]["classifier"] == str(clf)
    row = metric_row(report)
    assert set(IS_COLUMNS) <= set(row)
    assert row["is"] == pytest.approx(entry["value"]) and 1 <= row["is"] <= 2 + 1e-9
    assert row["is_real"] == pytest.approx(entry["details"]["real"]["mean"])
