"""``medgen translate``: scans keep their grid, orientation and units; data sets get outputs and paired metrics.

A ``unet`` trained with a vanishing learning rate is the identity (its residual head starts at zero), so a
translated scan must come back equal to the scan: any error of orientation, normalisation or windowing
shows up as a difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main
from medgen.metrics import paired
from toy_volumes import make_dataset


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("translate")
    data = make_dataset(root / "data", n=4, size=16, degraded=True)
    code = main(["train", str(data), "--family", "unet", "--preset", "tiny", "--task", "denoise", "--out",
                 str(root / "run"), "--iters", "1", "--batch", "2", "--hparam", "lr=1e-12", "--split-fractions",
                 "1,0,0", "--sample-every", "0", "--no-progress"])
    assert code == 0
    return root / "run", data


def test_a_ct_scan_in_another_orientation_comes_back_on_its_grid_in_hu(identity_run, tmp_path, capsys):
    run, _ = identity_run
    rng = np.random.default_rng(0)
    hu = np.clip(rng.normal(-300, 400, (40, 36, 24)), -1024, 600).round().astype(np.int16)  # larger than 16³: windows
    affine = np.array([[-0.9, 0, 0, 10], [0, -0.9, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])  # LPS-like
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(nib.Nifti1Image(hu, affine), scans / "case1.nii.gz")
    assert main(["translate", str(run), str(scans), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "wrote 1 volume(s)" in capsys.readouterr().out
    out = nib.load(tmp_path / "out" / "case1.nii.gz")
    assert out.get_data_dtype() == np.int16
    canonical = nib.as_closest_canonical(nib.Nifti1Image(hu, affine))
    np.testing.assert_allclose(out.affine, canonical.affine)
    got = np.asarray(out.dataobj).astype(np.float64)
    assert np.abs(got - canonical.get_fdata()).max() <= 1.0  # identity model: HU back to the rounding
    # a rerun keeps the finished output
    assert main(["translate", str(run), str(scans), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "kept 1" in capsys.readouterr().out


def test_a_paired_data_set_gets_outputs_and_metrics_that_match_their_definition(identity_run, tmp_path):
    run, data = identity_run
    out = tmp_path / "out"
    assert main(["translate", str(run), str(data), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("id,")
    psnrs = []
    for i in range(4):
        y = np.load(out / "outputs" / f"v{i}.npy")
        degraded = np.load(data / "degradeds" / f"v{i}.npy").astype(np.float32)
        target = np.load(data / "volumes" / f"v{i}.npy").astype(np.float32)
        np.testing.assert_allclose(y, degraded, atol=1e-4)  # the identity model
        psnrs.append(paired.psnr(y, target))
        assert nib.load(out / f"v{i}.nii.gz").get_data_dtype() == np.int16
    assert report["metrics"]["psnr"]["value"] == pytest.approx(np.mean(psnrs), rel=1e-6)


def test_outputs_added_to_the_data_set_as_a_volume_train_like_any_volume(identity_run, tmp_path, capsys):
    import shutil

    from medgen.data.dataset import VolumeDataset, volume_kinds, load_preprocess_info

    run, data = identity_run
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    assert main(["translate", str(run), str(copy), "--out", str(tmp_path / "o"), "--as-volume", "restyled",
                 "--no-progress"]) == 0
    assert "as the volume 'restyled'" in capsys.readouterr().out
    assert volume_kinds(load_preprocess_info(copy))["restyled"] == "intensity"
    ds = VolumeDataset(copy, split="all", label_column=None, keys=("image", "restyled"))
    for i in range(len(ds)):
        item = ds[i]
        out = np.load(tmp_path / "o" / "outputs" / f"{item['id']}.npy")
        np.testing.assert_allclose(item["restyled"][0].numpy(), out, atol=1e-3)  # stored float16 like the image
    # scans have no data set to add to; the model's own volumes are not overwritten
    assert main(["translate", str(run), str(copy / "volumes" / "v0.npy"), "--out", str(tmp_path / "s"),
                 "--as-volume", "x"]) == 2
    assert main(["translate", str(run), str(copy), "--out", str(tmp_path / "d"), "--as-volume", "degraded"]) == 2
    assert "reads or predicts" in capsys.readouterr().err


def test_refusals(identity_run, tmp_path, capsys):
    run, data = identity_run
    assert main(["translate", str(run), str(tmp_path / "nowhere.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    plain = make_dataset(tmp_path / "plain", n=2, size=16)
    assert main(["translate", str(run), str(plain), "--out", str(tmp_path / "o")]) == 2
    assert "missing degraded" in capsys.readouterr().err


def test_an_mri_scan_comes_back_in_its_own_intensity_units(tmp_path):
    """An MRI run (identity model): the scan is normalised by its own percentiles and mapped back, so values
    inside the percentile range return unchanged and those beyond are clipped to it."""
    data = make_dataset(tmp_path / "data", n=2, size=16, degraded=True)
    info = json.loads((data / "preprocess.json").read_text())
    info.update(modality="mri", percentiles=[0.5, 99.5])
    (data / "preprocess.json").write_text(json.dumps(info))
    assert main(["train", str(data), "--family", "unet", "--preset", "tiny", "--out", str(tmp_path / "run"), "--iters",
                 "1", "--batch", "2", "--hparam", "lr=1e-12", "--split-fractions", "1,0,0", "--sample-every", "0",
                 "--no-progress"]) == 0
    rng = np.random.default_rng(1)
    t1 = np.where(rng.random((20, 20, 12)) < 0.7, rng.gamma(4.0, 100.0, (20, 20, 12)), 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(t1, np.diag([1.2, 1.2, 3.0, 1.0])), tmp_path / "t1.nii.gz")
    assert main(["translate", str(tmp_path / "run"), str(tmp_path / "t1.nii.gz"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    got = nib.load(tmp_path / "out" / "t1.nii.gz").get_fdata()
    lo, hi = np.percentile(t1[t1 != 0], [0.5, 99.5])
    np.testing.assert_allclose(got, np.clip(t1, lo, hi), rtol=1e-4, atol=1e-3 * hi)


def test_evaluate_paired_matches_the_translate_metrics_and_restricts_to_masks(identity_run, tmp_path, capsys):
    run, data = identity_run
    out = tmp_path / "out"
    assert main(["translate", str(run), str(data), "--out", str(out), "--no-progress"]) == 0
    expected = json.loads((out / "metrics.json").read_text())["metrics"]
    masks = tmp_path / "masks"
    masks.mkdir()
    hidden = np.zeros((16, 16, 16), np.int16)
    hidden[4:8, 4:8, 4:8] = 1
    for i in range(4):
        np.save(masks / f"v{i}.npy", hidden)
    assert main(["evaluate", "--paired", "--real", str(data), "--fake", str(out), "--masks", str(masks), "--out",
                 str(tmp_path / "paired.json"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "paired.json").read_text())
    assert report["settings"]["pairs"] == 4
    # the outputs were read back from int16 HU NIfTI: equal to the in-memory metrics up to that rounding
    assert report["metrics"]["psnr"]["value"] == pytest.approx(expected["psnr"]["value"], abs=0.05)
    assert report["metrics"]["hu_mae_body"]["value"] == pytest.approx(expected["hu_mae_body"]["value"], abs=1.0)
    maes = []
    for i in range(4):
        o = (np.asarray(nib.load(out / f"v{i}.nii.gz").dataobj, dtype=np.float64) + 1024) / 1624 * 2 - 1
        t = np.load(data / "volumes" / f"v{i}.npy").astype(np.float64)
        maes.append(np.abs(o - t)[hidden.astype(bool)].mean())
    assert report["metrics"]["mae_mask"]["value"] == pytest.approx(np.mean(maes), rel=1e-3)
    assert main(["evaluate", "--real", str(data), "--fake", str(out), "--masks", str(masks), "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "--masks goes with --paired" in capsys.readouterr().err
