"""medgen experiment anomaly: detectors trained on normal phantoms, scored against known lesions."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from medgen.cli import main
from medgen.experiments import anomaly as exp


def test_auroc_of_the_large_lesions_leaves_out_the_small_ones():
    from sklearn.metrics import roc_auc_score

    rows = [{"abnormal": 0, "score": 0.1, "largest_lesion_mm": 0}, {"abnormal": 0, "score": 0.5},
            {"abnormal": 1, "score": 0.2, "largest_lesion_mm": 4.0},  # small: below the normal 0.5
            {"abnormal": 1, "score": 0.9, "largest_lesion_mm": 12.0}, {"abnormal": 1, "score": 0.6,
                                                                       "largest_lesion_mm": 25.0}]
    assert exp.auroc_subset(rows, 10.0) == 1.0
    every = exp.auroc_subset(rows, 0.0)
    assert every == pytest.approx(roc_auc_score([0, 0, 1, 1, 1], [0.1, 0.5, 0.2, 0.9, 0.6]))
    assert every < 1.0
    assert exp.auroc_subset(rows, 30.0) is None  # no abnormal volume left


def test_the_training_note_names_only_the_detectors_that_ran():
    assert exp.training_note(["inpaint"], 5) == ""
    ae = exp.training_note(["ae", "inpaint"], 5)
    assert ae.startswith("autoencoder trained on the normal volumes, 5 minutes each")
    assert "f-AnoGAN" not in ae and "VAE" not in ae and "DDPM" not in ae
    every = exp.training_note(list(exp.DETECTORS), 2.5)
    assert "f-AnoGAN's encoder" in every and "the VAE with" in every and every.endswith("13 DDIM steps.")


@pytest.mark.parametrize("argv, words", [
    (["--detectors", "ae,nope"], "--detectors"),
    (["--lesions", "wmh"], "--lesions"),
    (["--minutes", "0"], "--minutes"),
    (["--test-volumes", "2"], "--test-volumes"),
    (["--size", "8"], "--size 8"),
    (["--shifts", "0"], "--shifts 0"),
    (["--detectors", "ae", "--shifts", "2"], "only the inpaint detector"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, argv, words):
    code = main(["experiment", "anomaly", "--scale", "smoke", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[-1]


@pytest.mark.slow
def test_smoke_run_scores_every_detector_on_every_lesion_kind(tmp_path):
    from sklearn.metrics import roc_auc_score

    out, work = tmp_path / "out", tmp_path / "work"
    assert main(["experiment", "anomaly", "--scale", "smoke", "--work", str(work), "--out", str(out),
                 "--detectors", "ae,vae", "--lesions", "mass", "--minutes", "0.02", "--test-volumes", "8",
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "anomaly.csv")))
    assert [(r["lesion"], r["detector"], r["map"]) for r in rows] == [
        ("mass", "autoencoder", "residual"), ("mass", "autoencoder", "normative"),
        ("mass", "VAE", "residual"), ("mass", "VAE", "normative"), ("mass", exp.ENSEMBLE, "normative")]
    # the table's AUROC is that of the per-volume scores medgen anomaly wrote, against the ground truth
    record = json.loads((out / "experiment.json").read_text())
    runs = record["results"]["runs"]
    z = []
    for row, det, column in zip(rows, ("ae", "ae", "vae", "vae"), ("score", "z_score_mean") * 2):
        scored = next((work / "anomaly").glob(f"{det}-{exp.Path(runs[det]).name}-it*/mass-n8"))
        vols = list(csv.DictReader(open(scored / "scores.csv")))
        if row["map"] == "normative":
            z.append([float(v["score_blob_excess_z"]) for v in vols])
        y = [int(v["abnormal"]) for v in vols]
        assert 0 < sum(y) < len(y) and float(row["auroc"]) == pytest.approx(
            roc_auc_score(y, [float(v[column]) for v in vols]))
        # the blob score's AUROC, of the blob scores written: normative rows its excess over the reference
        blob = "score_blob_max" if row["map"] == "residual" else "score_blob_excess"
        assert float(row["auroc_blob"]) == pytest.approx(roc_auc_score(y, [float(v[blob]) for v in vols]))
        assert 0 < float(row["lesion_voxel_fraction"]) < 0.2 and 0 <= float(row["best_dice"]) <= 1
        assert int(row["iterations"]) >= 1
    # the ensemble row: the AUROC of the mean of both detectors' calibrated blob excess
    ensemble = np.mean(z, axis=0)
    assert float(rows[-1]["auroc"]) == pytest.approx(roc_auc_score(y, ensemble)) == float(rows[-1]["auroc_blob"])
    assert rows[-1]["voxel_auprc"] == ""
    assert any(c.startswith("medgen anomaly-ensemble ") for c in record["results"]["commands"])
    # the test set: half of the volumes with a mass, its lesion map aligned with the image
    manifest = list(csv.DictReader(open(work / "data" / "lesions-mass-32-n8" / "manifest.csv")))
    assert {"abnormal", "lesion"} <= set(manifest[0]) and len(manifest) == 8 == len(vols)  # --test-volumes 8
    assert "--test-volumes 8" in (out / "anomaly.md").read_text()
    lesion = np.load(work / "data" / "lesions-mass-32-n8" / manifest[0]["lesion"])
    assert lesion.shape == (32, 32, 32)
    assert (out / "anomaly-mass.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "anomaly.md").read_text()
    assert "medgen experiment anomaly" in md and "best_dice" in md


@pytest.mark.slow
def test_smoke_run_of_the_mask_and_inpaint_detector(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert main(["experiment", "anomaly", "--scale", "smoke", "--work", str(work), "--out", str(out),
                 "--detectors", "inpaint", "--lesions", "nodule", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "anomaly.csv")))
    assert [(r["detector"], r["map"]) for r in rows] == [("mask-and-inpaint (unet)", "residual"),
                                                         ("mask-and-inpaint (unet)", "normative")]
    # trained on the normal set with boxes of 25 mm hidden (2 voxels of 12.5 mm at 32³), as an inpaint-task unet
    # on patches
    degraded = work / "data" / "inpaint-boxes2-train-32"
    assert {r["inpaint_size_mm"] for r in csv.DictReader(open(degraded / "manifest.csv"))} == {"25"}
    cfg = yaml.safe_load((work / "runs" / "unet-inpaint-32" / "config.yaml").read_text())
    assert cfg["family"] == "unet" and cfg["model"]["task"] == "inpaint" and cfg["hparams"]["patch"] == 32
    assert "--box 2" in (out / "anomaly.md").read_text() and 0 <= float(rows[0]["voxel_auroc"]) <= 1
    # more placements of the checkerboard than the cubes' edge (2 voxels at 32³) would repeat one: refused
    code = main(["experiment", "anomaly", "--scale", "smoke", "--work", str(work), "--out", str(tmp_path / "o3"),
                 "--detectors", "inpaint", "--lesions", "nodule", "--shifts", "3", "--no-progress"])
    assert code == 2 and not (tmp_path / "o3" / "anomaly.csv").exists()
    # two placements: reconstructions and maps of their own, never the cached ones of one placement
    assert main(["experiment", "anomaly", "--scale", "smoke", "--work", str(work), "--out", str(tmp_path / "o2"),
                 "--detectors", "inpaint", "--lesions", "nodule", "--shifts", "2", "--no-progress"]) == 0
    two, = (work / "anomaly").glob("inpaint-unet-inpaint-32-it*-shifts2")
    one, = (p for p in (work / "anomaly").glob("inpaint-unet-inpaint-32-it*") if p != two)
    assert "--box 2 --shifts 2" in (tmp_path / "o2" / "anomaly.md").read_text()
    name = sorted(p.name for p in (one / "nodule" / "reconstructions").glob("*.nii.gz"))[0]
    rec1 = nib.load(one / "nodule" / "reconstructions" / name).get_fdata()
    rec2 = nib.load(two / "nodule" / "reconstructions" / name).get_fdata()
    assert rec1.shape == rec2.shape and np.abs(rec1 - rec2).max() > 1.0  # HU: the placements differ
