"""`medgen experiment image2image`: a smoke run whose baseline numbers are recomputed from its data sets."""

import csv

import numpy as np
import pytest

from medgen.cli import main
from medgen.metrics import paired


@pytest.mark.slow
def test_image2image_smoke_run_reports_baselines_and_models(tmp_path):
    out, work = tmp_path / "out", tmp_path / "w"
    assert main(["experiment", "image2image", "--scale", "smoke", "--work", str(work), "--out", str(out),
                 "--tasks", "sr,inpaint", "--no-progress"]) == 0
    with open(out / "image2image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["task"], r["method"]) for r in rows] == [
        ("sr", "nearest (input)"), ("sr", "linear interpolation"), ("sr", "unet (tiny)"), ("sr", "pix2pix (tiny)"),
        ("inpaint", "mean-filling (input)"), ("inpaint", "unet (tiny)"), ("inpaint", "pix2pix (tiny)")]
    by = {(r["task"], r["method"]): r for r in rows}
    # the baselines, recomputed from the held-out pairs on disk
    import glob

    held = sorted(glob.glob(str(work / "data" / "sr-heldout-32" / "degradeds" / "*.npy")))
    psnrs, maes = [], []
    for path in held:
        name = path.rsplit("/", 1)[1]
        clean = np.load(work / "data" / "sr-heldout-32" / "volumes" / name).astype(np.float32)
        psnrs.append(paired.psnr(np.load(path).astype(np.float32), clean))
        hidden = np.load(work / "data" / "inpaint-heldout-32" / "masks" / name).astype(bool)
        filled = np.load(work / "data" / "inpaint-heldout-32" / "degradeds" / name).astype(np.float32)
        maes.append(np.abs(filled[hidden] - clean[hidden]).mean())
    assert float(by[("sr", "nearest (input)")]["psnr"]) == pytest.approx(np.mean(psnrs), rel=1e-6)
    assert float(by[("inpaint", "mean-filling (input)")]["mae_mask"]) == pytest.approx(np.mean(maes), rel=1e-5)
    # linear interpolation between the kept slices beats repeating them on smooth anatomy
    assert float(by[("sr", "linear interpolation")]["psnr"]) > float(by[("sr", "nearest (input)")]["psnr"])
    # gain_db is the model's PSNR minus the best baseline's
    best = max(float(by[("sr", m)]["psnr"]) for m in ("nearest (input)", "linear interpolation"))
    assert float(by[("sr", "unet (tiny)")]["gain_db"]) == pytest.approx(float(by[("sr", "unet (tiny)")]["psnr"]) - best)
    for task in ("sr", "inpaint"):
        assert (out / f"image2image-{task}.png").stat().st_size > 1000
    assert "medgen experiment image2image" in (out / "image2image.md").read_text()


def test_class_mean_baseline_is_the_training_mean_per_label_and_per_intensity_bin():
    from medgen.experiments.image2image import class_mean_baseline

    rng = np.random.default_rng(0)
    train = []
    for _ in range(3):
        lab = rng.integers(0, 3, (4, 4, 4))
        train.append({"tissue": lab, "image": np.where(lab == 1, 0.5, -0.5) + rng.normal(0, 0.1, lab.shape)})
    held = [{"tissue": np.array([[[0, 1], [2, 5]]] * 2)}]  # class 5 never seen in training
    (out,) = class_mean_baseline(train, held, "tissue", "image")
    every_lab = np.concatenate([p["tissue"].ravel() for p in train])
    every_img = np.concatenate([p["image"].ravel() for p in train])
    for c, v in ((0, out[0, 0, 0]), (1, out[0, 0, 1]), (2, out[0, 1, 0])):
        assert v == pytest.approx(every_img[every_lab == c].mean(), rel=1e-5)
    assert out[0, 1, 1] == pytest.approx(every_img.mean(), rel=1e-5)
    # intensities: bins of [-1, 1]
    t1 = [{"image": np.array([-0.9, -0.9, 0.9]), "t2": np.array([1.0, 3.0, 5.0])}]
    (mapped,) = class_mean_baseline(t1, [{"image": np.array([-0.95, 0.95])}], "image", "t2", bins=4)
    np.testing.assert_allclose(mapped, [2.0, 5.0])


def test_anatomy_errors_are_relative_fraction_errors():
    from medgen.experiments.image2image import anatomy_errors

    window = (-1024.0, 600.0)
    unit = lambda hu: (np.asarray(hu, float) - window[0]) / (window[1] - window[0]) * 2 - 1  # noqa: E731
    hu = np.full((24, 24, 24), -1000.0)
    hu[4:20, 4:20, 2:22] = 40.0
    hu[6:11, 6:18, 4:20] = -850.0  # a lung
    hu[14:17, 10:13, 2:22] = 600.0  # bone
    out = hu.copy()
    out[6:8, 6:18, 4:20] = 40.0  # 2 of the 5 lung rows filled in: lung fraction 40 % lower
    errs = anatomy_errors([unit(out)], [unit(hu)], window)
    assert errs["lung_fraction_err_pct"] == pytest.approx(40.0, rel=1e-6)
    assert errs["bone_fraction_err_pct"] == pytest.approx(0.0, abs=1e-9)


def test_trivial_baselines_are_the_input_or_the_mean_training_target():
    from medgen.experiments.image2image import TASK_SPECS, trivial_baseline

    rng = np.random.default_rng(1)
    train = [{"drr_pa": rng.normal(size=(3, 3, 3)), "image": rng.normal(size=(3, 3, 3))} for _ in range(4)]
    held = [{"drr_pa": rng.normal(size=(3, 3, 3)), "image": rng.normal(size=(3, 3, 3))} for _ in range(2)]
    mean = trivial_baseline(TASK_SPECS["xray2ct"], train, held, "drr_pa", "image")
    expected = sum(p["image"] for p in train) / 4
    assert len(mean) == 2 and all(np.allclose(m, expected, atol=1e-6) for m in mean)
    same = trivial_baseline(TASK_SPECS["restore"], [], held, "drr_pa", "image")
    assert all(a is b["drr_pa"] for a, b in zip(same, held))
