"""medgen encode: latent CSV joined with the manifest, latents vs an independent
hierarchical encoding, reconstruction files and their error, splits, size errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.data.dataset import split_ids
from test_generate import SPACING, WINDOW, trained_run


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory) -> tuple[Path, Path]:
    return trained_run(tmp_path_factory.getbasetemp())


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def encode_by_hand(model, x: np.ndarray) -> np.ndarray:
    """E^G(concatenation of E^H on each non-overlapping slab) written out, for one volume."""
    cfg, e = model.config, model.encoder
    t = torch.from_numpy(x.astype(np.float32))[None, None]
    n = cfg.slab_len
    with torch.no_grad():
        slabs = [e.high(t[..., k * n : (k + 1) * n]) for k in range(cfg.size // n)]
        return e.ground(torch.cat(slabs, dim=-1))[0].numpy()


def test_latents_csv_joins_manifest_and_matches_the_encoder(run_and_data, tmp_path):
    import medgen

    run, data = run_and_data
    out, rec = tmp_path / "latents.csv", tmp_path / "rec"
    code = main(["encode", str(run), str(data), "--out", str(out), "--reconstruct", str(rec),
                 "--batch-size", "4", "--no-progress", "--device", "cpu"])
    assert code == 0
    columns, rows = read_csv(out)
    model = medgen.load(run, use_ema=False)
    d = model.config.latent_dim
    assert columns == ["id", "label", "age"] + [f"z_{k}" for k in range(d)] + ["recon_l1", "recon_l1_hu"]
    _, manifest = read_csv(data / "manifest.csv")
    by_id = {r["id"]: r for r in manifest}
    assert sorted(r["id"] for r in rows) == sorted(by_id)  # every volume once
    lo, hi = WINDOW
    for r in rows:
        m = by_id[r["id"]]
        assert (r["label"], r["age"]) == (m["label"], m["age"])  # joined by id, not by row order
        x = np.load(data / m["file"]).astype(np.float32)
        z = np.array([float(r[f"z_{k}"]) for k in range(d)])
        assert np.allclose(z, encode_by_hand(model, x), rtol=1e-4, atol=1e-5)
        # the written reconstruction: G(z) in HU on the volume's own grid
        img = nib.load(rec / f"{r['id']}.nii.gz")
        assert img.header.get_zooms() == pytest.approx(SPACING)
        hu_rec = np.asanyarray(img.dataobj).astype(np.float64)
        with torch.no_grad():
            g = model.generator
            ref = g.high(g.features(torch.from_numpy(z.astype(np.float32))[None]))[0, 0].numpy()
        assert np.abs(hu_rec - (lo + (ref + 1) / 2 * (hi - lo))).max() <= 0.5 + 0.05
        # error columns: mean |G(E(x)) - x| in [-1, 1] units and in HU, recomputed from the files
        hu_real = lo + (x.astype(np.float64) + 1) / 2 * (hi - lo)
        l1_hu = float(np.mean(np.abs(hu_rec - hu_real)))
        assert float(r["recon_l1_hu"]) == pytest.approx(l1_hu, abs=0.5)  # files hold whole HU (|rounding| <= 0.5)
        assert float(r["recon_l1"]) == pytest.approx(float(r["recon_l1_hu"]) / ((hi - lo) / 2), rel=1e-5)
        assert np.isfinite(float(r["recon_l1"])) and float(r["recon_l1"]) > 0


def test_split_selects_the_runs_split(run_and_data, tmp_path):
    from medgen.training.runconfig import RunConfig

    run, data = run_and_data
    cfg = RunConfig.load(run)
    out = tmp_path / "test.csv"
    assert main(["encode", str(run), str(data), "--out", str(out), "--split", "test", "--no-progress"]) == 0
    _, rows = read_csv(out)
    _, manifest = read_csv(data / "manifest.csv")
    expected = split_ids([m["id"] for m in manifest], cfg.split_seed, cfg.split_fractions)["test"]
    assert [r["id"] for r in rows] == expected and len(expected) > 0
    assert "recon_l1" not in rows[0]


def test_volume_size_mismatch_exits_2_naming_both_sizes(run_and_data, tmp_path, capsys):
    run, data = run_and_data
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.csv").write_text((data / "manifest.csv").read_text())
    info = json.loads((data / "preprocess.json").read_text())
    info["size"] = 64
    (other / "preprocess.json").write_text(json.dumps(info))
    code = main(["encode", str(run), str(other), "--out", str(tmp_path / "x.csv"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "64" in err and "32" in err
    assert not (tmp_path / "x.csv").exists()
