"""Segmentation: Dice and HD95 against closed forms and MONAI, the ``seg-unet`` family, ``medgen segment`` and
``medgen evaluate --paired --labels``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.core.errors import UsageError
from medgen.metrics import overlap
from toy_volumes import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
S = 16


def cube(lo: int, hi: int, shift: tuple[int, int, int] = (0, 0, 0), n: int = S) -> np.ndarray:
    m = np.zeros((n, n, n), np.int16)
    x, y, z = shift
    m[lo + x:hi + x, lo + y:hi + y, lo + z:hi + z] = 1
    return m


# --------------------------------------------------------------------------- metrics


def test_dice_of_two_offset_cubes_is_the_overlap_by_hand():
    a, b = cube(2, 8), cube(2, 8, (2, 0, 0))  # 6³ cubes, 4·6·6 voxels shared
    assert overlap.dice(a, b, 1) == pytest.approx(2 * 144 / (216 + 216))
    c = cube(2, 8, (1, 1, 1))  # 5³ shared
    assert overlap.dice(a, c, 1) == pytest.approx(2 * 125 / 432)
    assert overlap.dice(a, a, 1) == 1.0


def test_hd95_of_a_cube_shifted_by_two_voxels_is_two_voxels_in_mm():
    a = cube(2, 8)
    assert overlap.hausdorff95(a, cube(2, 8, (2, 0, 0)), 1, spacing=(1.5, 1.0, 1.0)) == pytest.approx(3.0)
    assert overlap.hausdorff95(a, cube(2, 8, (0, 2, 0)), 1, spacing=(1.5, 1.0, 1.0)) == pytest.approx(2.0)
    assert overlap.hausdorff95(a, cube(2, 8, (0, 0, 3)), 1, spacing=(1.0, 1.0, 2.5)) == pytest.approx(7.5)
    assert overlap.hausdorff95(a, a, 1) == 0.0


def test_a_label_absent_from_both_is_nan_and_from_one_is_zero_dice_and_infinite_distance():
    a, empty = cube(2, 8), np.zeros((S, S, S), np.int16)
    row = overlap.label_metrics(a, empty, labels=[1, 2])
    assert row["dice_1"] == 0.0 and row["hd95_1"] == math.inf
    assert math.isnan(row["dice_2"]) and math.isnan(row["hd95_2"])
    assert row["dice_mean"] == 0.0 and row["hd95_mean"] == math.inf  # label 2 left out of the means
    assert overlap.labels_of(a, 2 * a) == [1, 2] and overlap.labels_of(a, background=True) == [0, 1]


def test_per_label_metrics_equal_monai_on_random_multilabel_maps():
    from monai.metrics import DiceMetric, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(0)
    g = np.indices((S, S, S)).astype(np.float64)

    def blobs(offset: float) -> np.ndarray:
        m = np.zeros((S, S, S), np.int64)
        for k, c in ((1, (5, 6, 7)), (2, (10, 9, 8)), (3, (8, 11, 4))):
            r = rng.uniform(2.5, 4.0)
            m[((g - (np.array(c)[:, None, None, None] + offset)) ** 2).sum(0) < r * r] = k
        return m

    pred, ref = blobs(0.0), blobs(0.7)
    spacing = (0.8, 1.2, 2.0)
    row = overlap.label_metrics(pred, ref, spacing=spacing)
    p = one_hot(torch.from_numpy(pred)[None, None], 4)
    r = one_hot(torch.from_numpy(ref)[None, None], 4)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    metric(p, r)
    dice = metric.aggregate()[0]
    hd = compute_hausdorff_distance(p, r, include_background=False, percentile=95, spacing=list(spacing))[0]
    for k in (1, 2, 3):
        assert row[f"dice_{k}"] == pytest.approx(float(dice[k - 1]), abs=1e-6)
        assert row[f"hd95_{k}"] == pytest.approx(float(hd[k - 1]), abs=1e-6)
        assert 0 < row[f"dice_{k}"] < 1 and row[f"hd95_{k}"] > 0
    assert row["dice_mean"] == pytest.approx(float(dice.mean()), abs=1e-6)


# --------------------------------------------------------------------------- the family


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("seg")
    data = make_dataset(root / "data", n=4, size=S, labels=True)
    code = main(["train", str(data), "--family", "seg-unet", "--preset", "tiny", "--out", str(root / "run"),
                 "--iters", "30", "--batch", "2", "--hparam", "lr=0.01", "--split-fractions", "1,0,0",
                 "--sample-every", "0", "--log-every", "1", "--device", "cpu", "--no-progress"])
    assert code == 0
    return root / "run", data


def test_training_reads_the_classes_from_the_label_volume_and_learns_the_mask(trained):
    from medgen.training.runconfig import RunConfig

    run, _ = trained
    cfg = RunConfig.load(run)
    assert cfg.model["num_classes"] == 2 and cfg.model["label"] == "tissue" and cfg.model["inputs"] == ["image"]
    assert cfg.label_column is None  # the classes are the label map's, not the manifest's label column
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"loss_DiceCE", "loss_Dice"} <= set(rows[0])
    assert float(rows[-1]["loss_DiceCE"]) < 0.5 * float(rows[0]["loss_DiceCE"])
    assert float(rows[-1]["loss_Dice"]) > 0.9


def test_num_classes_comes_from_the_option_or_preprocess_json(tmp_path):
    from medgen.families.run_config import new_run_config
    from medgen.families.seg_unet.config import options_from_data

    data = make_dataset(tmp_path / "data", n=2, size=S, labels=True)
    cfg = new_run_config(data, tmp_path / "run", family="seg-unet", preset="tiny", model_options={"num_classes": 5})
    assert cfg.model["num_classes"] == 5 and cfg.label_column is None
    info = {"volumes": {"tissue": {"kind": "label"}, "image": {"kind": "intensity"}}}
    with pytest.raises(UsageError, match="--num-classes"):
        options_from_data(info, {})
    with pytest.raises(UsageError, match="no label volume 'image'"):
        options_from_data(info, {"target": "image"})
    assert options_from_data({"volumes": {"seg": {"kind": "label", "classes": {"0": "a", "3": "b"}}}},
                             {"target": "seg"})["num_classes"] == 4


def test_labels_outside_the_classes_stop_training_with_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=2, size=S, labels=True)
    for p in (data / "tissues").glob("*.npy"):
        m = np.load(p)
        m[0, 0, 0] = 2
        np.save(p, m)
    code = main(["train", str(data), "--family", "seg-unet", "--preset", "tiny", "--out", str(tmp_path / "run"),
                 "--iters", "1", "--batch", "2", "--split-fractions", "1,0,0", "--sample-every", "0",
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "classes 0..2" in err and "--num-classes 3" in err


def test_segment_by_windows_gives_an_int16_map_of_the_input_shape(trained):
    import medgen

    model = medgen.load(trained[0])
    x = np.full((24, 20, 16), -1.0, np.float32)
    x[4:20, 4:16, :] = 0.2
    whole, windowed = model.segment(x, window=0), model.segment(x, window=8)
    assert whole.dtype == windowed.dtype == np.int16 and whole.shape == windowed.shape == x.shape
    probs = model.probabilities(x, window=0)
    assert probs.shape == (2, *x.shape) and np.allclose(probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(whole, probs.argmax(0))
    assert (whole == (x > 0)).mean() > 0.95  # the learnt body mask
    with pytest.raises(UsageError, match="multiple of 4"):
        model.segment(x, window=6)


def test_segment_a_data_set_writes_label_maps_and_metrics_that_evaluate_reproduces(trained, tmp_path, capsys):
    run, data = trained
    out = tmp_path / "seg"
    assert main(["segment", str(run), str(data), "--out", str(out), "--no-progress"]) == 0
    assert "wrote 4 label map(s)" in capsys.readouterr().out
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["v0", "v1", "v2", "v3"]
    for r in rows:
        img = nib.load(out / f"{r['id']}.nii.gz")
        assert img.get_data_dtype() == np.int16
        pred = np.asarray(img.dataobj)
        ref = np.load(data / "tissues" / f"{r['id']}.npy")
        assert float(r["dice_1"]) == pytest.approx(2 * ((pred == 1) & (ref == 1)).sum() / ((pred == 1).sum() + (ref == 1).sum()))
        assert float(r["hd95_1"]) == pytest.approx(overlap.hausdorff95(pred, ref, 1))
    report = json.loads((out / "metrics.json").read_text())
    dice = [float(r["dice_1"]) for r in rows]
    assert report["metrics"]["dice_1"]["value"] == pytest.approx(np.mean(dice))
    assert report["metrics"]["dice_1"]["std"] == pytest.approx(np.std(dice))
    assert report["labels"] == [1] and report["metrics"]["dice_1"]["value"] > 0.9
    # a rerun keeps the maps; evaluate --paired --labels gives the same numbers from the folders
    assert main(["segment", str(run), str(data), "--out", str(out), "--no-progress"]) == 0
    assert "kept 4" in capsys.readouterr().out
    ev = tmp_path / "ev.json"
    assert main(["evaluate", "--paired", "--labels", "--real", str(data), "--fake", str(out), "--out", str(ev),
                 "--no-progress"]) == 0
    result = json.loads(ev.read_text())
    assert result["settings"]["pairs"] == 4 and result["settings"]["labels"] == [1]
    for got, want in zip(result["rows"], rows):
        assert got["id"] == want["id"]
        assert got["dice_1"] == pytest.approx(float(want["dice_1"])) and got["hd95_1"] == pytest.approx(float(want["hd95_1"]))
    assert main(["evaluate", "--labels", "--real", str(data), "--fake", str(out), "--out", str(ev)]) == 2


def test_evaluate_labels_on_two_folders_uses_the_references_spacing(tmp_path):
    a, b = tmp_path / "pred", tmp_path / "ref"
    a.mkdir()
    b.mkdir()
    affine = np.diag([1.5, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(cube(2, 8, (2, 0, 0)), affine), a / "s1.nii.gz")
    nib.save(nib.Nifti1Image(cube(2, 8), affine), b / "s1.nii.gz")
    report = overlap.evaluate_label_pairs(a, b)
    row = report["rows"][0]
    assert row["id"] == "s1" and row["dice_1"] == pytest.approx(2 / 3) and row["hd95_1"] == pytest.approx(3.0)


def test_a_scan_is_segmented_on_its_own_grid(trained, tmp_path, capsys):
    import medgen
    from medgen.inference.translate import normalise_scan

    run, _ = trained
    hu = np.full((24, 20, 16), -1000, np.int16)
    hu[4:20, 4:16, :] = 300
    affine = np.array([[-0.9, 0, 0, 10], [0, -0.9, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])  # LPS-like
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(nib.Nifti1Image(hu, affine), scans / "case1.nii.gz")
    assert main(["segment", str(run), str(scans), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = nib.load(tmp_path / "out" / "case1.nii.gz")
    canonical = nib.as_closest_canonical(nib.Nifti1Image(hu, affine))
    assert out.get_data_dtype() == np.int16
    np.testing.assert_allclose(out.affine, canonical.affine, atol=1e-5)
    model = medgen.load(run)
    x, _ = normalise_scan(canonical.get_fdata(), model.preprocess)
    np.testing.assert_array_equal(np.asarray(out.dataobj), model.segment(x, window=S))
