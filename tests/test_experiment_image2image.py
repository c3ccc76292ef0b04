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
