"""medgen experiment progression: follow-up prediction on longitudinal brain phantoms, against no change."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.experiments import progression as exp
from medgen.experiments.workspace import SCALES, Workspace


def test_model_names_keep_order_drop_duplicates_and_refuse_unknown_ones():
    assert exp.model_names("deformation, intensity,deformation") == ["deformation", "intensity"]
    for text in ("intensity,nope", "", " , "):
        with pytest.raises(UsageError, match="--models"):
            exp.model_names(text)


def test_training_iterations_default_by_scale_and_follow_iters(tmp_path):
    assert exp.train_iterations(Workspace(tmp_path, SCALES["demo"])) == exp.DEMO_ITERS
    assert exp.train_iterations(Workspace(tmp_path, SCALES["smoke"])) == SCALES["smoke"].iters
    assert exp.train_iterations(Workspace(tmp_path, SCALES["full"])) == SCALES["full"].iters
    assert exp.train_iterations(Workspace(tmp_path, SCALES["demo"], iters=7)) == 7


def test_mean_and_sample_sd_of_the_finite_values():
    mean, sd = exp.mean_sd([1.0, 2.0, 6.0, math.nan, None, math.inf])
    assert mean == pytest.approx(3.0)
    assert sd == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))  # ddof 1: √7
    assert exp.mean_sd([4.0]) == (4.0, None)
    assert exp.mean_sd([None, math.nan]) == (None, None)


def _rows():
    return [
        {"id": "a", "method": "no change", "l1": 0.1, "psnr": 30.0, "ssim": 0.9, "l1_change": 0.2,
         "ventricle_error_ml": -6.0, "ventricle_error_ml_floor": 1.0},
        {"id": "b", "method": "no change", "l1": 0.3, "psnr": 20.0, "ssim": 0.7, "l1_change": 0.4,
         "ventricle_error_ml": -10.0, "ventricle_error_ml_floor": -3.0},
        {"id": "a", "method": "model", "l1": 0.2, "psnr": 25.0, "ssim": 0.8, "l1_change": math.nan,
         "ventricle_error_ml": 2.0, "ventricle_error_ml_floor": 1.0},
        {"id": "b", "method": "model", "l1": 0.2, "psnr": 25.0, "ssim": 0.8, "l1_change": 0.1,
         "ventricle_error_ml": -4.0, "ventricle_error_ml_floor": -3.0},
    ]


def test_summary_rows_by_hand():
    rows = _rows()
    none = exp.summarise(rows, "no change")
    assert none["n"] == 2 and none["l1"] == pytest.approx(0.2) and none["l1_sd"] == pytest.approx(math.sqrt(0.02))
    assert none["psnr"] == pytest.approx(25.0) and none["ventricle_error_ml"] == pytest.approx(-8.0)
    assert none["ventricle_abs_error_ml"] == pytest.approx(8.0)
    model = exp.summarise(rows, "model")
    assert model["l1_change"] == pytest.approx(0.1) and model["l1_change_sd"] is None  # the NaN left out
    assert model["ventricle_error_ml"] == pytest.approx(-1.0)  # signed errors cancel ...
    assert model["ventricle_abs_error_ml"] == pytest.approx(3.0)  # ... absolute ones do not
    assert model["ventricle_abs_error_ml_sd"] == pytest.approx(math.sqrt(2.0))
    floor = exp.summarise(rows, exp.FLOOR)  # the true follow-up measured alike, counted once per subject
    assert floor["n"] == 2 and floor["l1"] is None
    assert floor["ventricle_error_ml"] == pytest.approx(-1.0) and floor["ventricle_abs_error_ml"] == pytest.approx(2.0)
    assert rows[0].get("ventricle_abs_error_ml") is None  # the input rows are left as they were


def test_paired_count_of_subjects_better_than_no_change():
    rows = _rows()
    assert exp.better_than(rows, "model") == "2/2"  # |2| < |-6| and |-4| < |-10|
    rows[2]["ventricle_error_ml"] = 6.0  # a tie is not better
    assert exp.better_than(rows, "model") == "1/2"
    assert exp.better_than(rows, "no change") is None and exp.better_than(rows, "absent") is None


def test_target_compares_the_mean_absolute_ventricle_error_with_no_change():
    table = [{"method": "no change", "ventricle_abs_error_ml": 8.0}, {"method": "m1", "ventricle_abs_error_ml": 3.0},
             {"method": "m2", "ventricle_abs_error_ml": 8.0}, {"method": "m3", "ventricle_abs_error_ml": None}]
    assert exp.target_met(table, ["m1", "m2", "m3"]) == {"m1": True, "m2": False, "m3": None}


def test_figure_subject_and_slice():
    manifest = [{"id": "a", "ventricle_volume_ml": "10", "ventricle_volume_ml_followup": "12"},
                {"id": "b", "ventricle_volume_ml": "30", "ventricle_volume_ml_followup": "45"},
                {"id": "c", "ventricle_volume_ml": "", "ventricle_volume_ml_followup": "99"}]
    assert exp.largest_growth(manifest) == "b"
    assert exp.largest_growth([{"id": "x"}, {"id": "y"}]) == "x"
    tissue = np.zeros((4, 4, 6), dtype=np.int16)
    tissue[1, 1, 2] = tissue[1:3, 1:3, 4] = exp.VENTRICLE_LABEL
    tissue[:, :, 5] = 3  # white matter, not ventricle
    assert exp.ventricle_slice(tissue, tissue.shape) == 4
    assert exp.ventricle_slice(None, (8, 8, 10)) == 5
    assert exp.ventricle_slice(np.zeros((4, 4, 6)), (4, 4, 6)) == 3


@pytest.mark.parametrize("argv, words", [
    (["--models", "intensity,nope"], "--models"),
    (["--models", ""], "--models"),
    (["--iters", "0"], "--iters"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, argv, words):
    code = main(["experiment", "progression", "--scale", "smoke", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[-1]


@pytest.mark.slow
def test_smoke_run_scores_every_method_on_the_heldout_pairs(tmp_path):
    from medgen.data.dataset import VolumeDataset, load_manifest
    from medgen.metrics import longitudinal

    out, work = tmp_path / "out", tmp_path / "work"
    assert main(["experiment", "progression", "--scale", "smoke", "--work", str(work), "--out", str(out),
                 "--models", "intensity,deformation", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "progression.csv")))
    assert [r["method"] for r in rows] == ["no change", "linear population trend", "progression (intensity)",
                                           "progression (deformation)", exp.FLOOR]
    n = SCALES["smoke"].n_heldout
    assert all(int(r["n"]) == n for r in rows)
    assert [r["iterations"] for r in rows] == ["", "", "2", "2", ""]
    # the table is the per-subject file reduced; no change's L1 is the baseline's against the follow-up
    subjects = list(csv.DictReader(open(out / "progression-subjects.csv")))
    heldout = work / "data" / "brain-longitudinal-heldout-32"
    ds = VolumeDataset(heldout, split="all", label_column=None, keys=("image", "followup", "tissue"))
    by_id = {r["id"]: r for r in load_manifest(heldout)}
    l1, vent = [], []
    for i in range(len(ds)):
        item = ds[i]
        x, y = item["image"][0].numpy(), item["followup"][0].numpy()
        l1.append(float(np.mean(np.abs(x.astype(np.float64) - y))))
        spacing = [float(v) for v in by_id[item["id"]]["spacing"].split("x")]
        ref = longitudinal.ventricle_reference(x, item["tissue"][0].numpy(), spacing)
        vent.append(longitudinal.ventricle_volume_ml(x, ref) - float(by_id[item["id"]]["ventricle_volume_ml_followup"]))
    assert float(rows[0]["l1"]) == pytest.approx(np.mean(l1), rel=1e-5)
    assert float(rows[0]["ventricle_error_ml"]) == pytest.approx(np.mean(vent), rel=1e-5)
    assert float(rows[0]["ventricle_abs_error_ml"]) == pytest.approx(np.mean(np.abs(vent)), rel=1e-5)
    mine = [float(s["ventricle_error_ml"]) for s in subjects if s["method"] == "progression (deformation)"]
    assert float(rows[3]["ventricle_error_ml_sd"]) == pytest.approx(np.std(mine, ddof=1), rel=1e-5)
    assert rows[-1]["l1"] == "" and float(rows[-1]["ventricle_abs_error_ml"]) >= 0
    assert rows[0]["better_than_no_change"] == "" and rows[-1]["better_than_no_change"] == ""
    assert rows[2]["better_than_no_change"].endswith(f"/{n}")
    record = json.loads((out / "experiment.json").read_text())
    assert set(record["results"]["target_met"]) == {"progression (intensity)", "progression (deformation)"}
    assert (out / "progression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "progression.md").read_text()
    assert "medgen experiment progression" in md and "measurement floor" in md
