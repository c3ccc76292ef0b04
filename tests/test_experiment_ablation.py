"""medgen experiment ablation: the smoke-scale table, figure and runs; the --run checks;
the reconstruction error and training speed against independent computations."""

from __future__ import annotations

import csv
import math
import struct

import numpy as np
import pytest
import torch

from medgen.cli import main
from medgen.experiments.ablation import (
    VARIANTS,
    ablation_size,
    check_full_run,
    heldout_volumes,
    mean_abs_error,
    reconstruction_mae,
    seconds_per_iteration,
)
from medgen.experiments.workspace import SCALES, Workspace
from toy_volumes import make_dataset

EXPECTED_VARIANTS = ["full", "no low-res branch", "no encoder", "deterministic slabs", "untrained generator"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    """One smoke-scale run of the experiment (1 training iteration per variant)."""
    root = tmp_path_factory.mktemp("ablation")
    work, out = root / "work", root / "out"
    # The smoke models are tiny: one intra-op thread is faster than several on a busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["experiment", "ablation", "--scale", "smoke", "--iters", "1", "--work", str(work),
                     "--out", str(out), "--device", "cpu", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    with open(out / "ablation.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"work": work, "out": out, "rows": rows}


def _number(text: str) -> float:
    value = float(text)
    assert math.isfinite(value), text
    return value


@pytest.mark.slow
def test_smoke_table(smoke):
    rows = smoke["rows"]
    assert [r["variant"] for r in rows] == EXPECTED_VARIANTS
    assert list(rows[0])[:5] == ["variant", "options", "iterations", "s_per_iter", "recon_mae"]
    by = {r["variant"]: r for r in rows}
    assert by["no low-res branch"]["options"] == "--no-lowres"
    assert by["no encoder"]["options"] == "--no-encoder"
    assert by["deterministic slabs"]["options"] == "--slab-selection deterministic"
    for r in rows[:4]:
        assert int(r["iterations"]) == 1
        assert _number(r["s_per_iter"]) > 0
    assert int(by["untrained generator"]["iterations"]) == 0
    assert by["untrained generator"]["s_per_iter"] == ""
    # recon_mae: empty exactly for the rows without an encoder; otherwise an error in [-1, 1] units.
    for r in rows:
        if r["variant"] in ("no encoder", "untrained generator"):
            assert r["recon_mae"] == ""
        else:
            assert 0 < _number(r["recon_mae"]) < 2
    for r in rows:
        assert _number(r["fid"]) >= 0
        _number(r["mmd"])
        assert 0 <= _number(r["ms_ssim"]) <= 1
        for key in ("precision", "recall", "coverage"):
            assert 0 <= _number(r[key]) <= 1
        assert _number(r["lung_fraction_w1"]) >= 0


@pytest.mark.slow
def test_smoke_runs_outputs_and_command(smoke):
    from medgen.training.runconfig import RunConfig

    runs = smoke["work"] / "runs"
    # The full model is the synthesis experiment's run, so it is shared, not retrained.
    assert (runs / "hagan-32" / "config.yaml").is_file()
    assert RunConfig.load(runs / "ablation-nolowres-32").model["use_lowres"] is False
    assert RunConfig.load(runs / "ablation-noencoder-32").hparams["use_encoder"] is False
    assert RunConfig.load(runs / "ablation-deterministic-32").hparams["slab_selection"] == "deterministic"
    full = RunConfig.load(runs / "hagan-32")
    assert full.hparams["use_encoder"] and full.hparams["slab_selection"] == "random" and full.model["use_lowres"]

    out = smoke["out"]
    md = (out / "ablation.md").read_text()
    assert "medgen experiment ablation --scale smoke --out" in md and "--iters 1" in md
    assert "no low-res branch: without G^L and D^L" in md
    for name in ("full", "nolowres", "noencoder", "deterministic", "untrained"):
        assert (out / "evaluations" / f"{name}-32.json").is_file()

    png = (out / "ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert 600 <= width <= 2000 and 500 <= height <= 2000  # 6 rows of 3 x 2 panels
    import json

    record = json.loads((out / "experiment.json").read_text())
    assert record["figures"] == ["ablation.png"]
    assert [r["variant"] for r in record["results"]["rows"]] == EXPECTED_VARIANTS


@pytest.mark.slow
def test_run_option_is_checked(smoke, tmp_path, capsys):
    from medgen.training.runconfig import RunConfig

    runs = smoke["work"] / "runs"
    check_full_run(runs / "hagan-32", 32, "tiny")  # the full model itself is accepted
    base = ["experiment", "ablation", "--scale", "smoke", "--work", str(smoke["work"]), "--out", str(tmp_path / "o")]

    assert main([*base, "--run", str(runs / "ablation-noencoder-32")]) == 2
    assert "--no-encoder" in capsys.readouterr().err

    cfg = RunConfig.load(runs / "hagan-32")
    cfg.model["size"] = 64
    cfg.save(tmp_path / "run64")
    assert main([*base, "--run", str(tmp_path / "run64")]) == 2
    err = capsys.readouterr().err
    assert "64³ model" in err and "32³" in err and err.count("\n") == 1

    with pytest.raises(Exception, match="architecture differs"):
        check_full_run(runs / "hagan-32", 32, "small")
    assert not (tmp_path / "o" / "ablation.csv").exists()


def test_ablation_size_follows_data(tmp_path):
    smoke = SCALES["smoke"]
    assert ablation_size(Workspace(tmp_path / "w", smoke)) == smoke.small_size
    data = make_dataset(tmp_path / "d64", n=1, size=64)
    assert ablation_size(Workspace(tmp_path / "w", smoke, data=data, heldout=data)) == 64
    assert [v.run_name(32) for v in VARIANTS] == [
        "hagan-32", "ablation-nolowres-32", "ablation-noencoder-32", "ablation-deterministic-32"]


# ---------------------------------------------------------------------- the reconstruction error
def test_mean_abs_error_planted():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (8, 8, 8)).astype(np.float32)
    recon = real + np.where(rng.random(real.shape) < 0.5, -0.25, 0.25).astype(np.float32)
    assert mean_abs_error(real, recon) == pytest.approx(0.25, abs=1e-6)
    assert mean_abs_error(real, real) == 0.0
    with pytest.raises(ValueError):
        mean_abs_error(real, recon[:4])


class _Negate:
    """A stand-in model whose reconstruction of x is -x (error 2|x| per voxel)."""

    def __init__(self) -> None:
        self.calls = 0

    def reconstruct(self, x):
        self.calls += 1
        return -np.asarray(x)


def test_reconstruction_mae_weighs_every_voxel_equally():
    rng = np.random.default_rng(1)
    vols = [rng.uniform(-1, 1, (4, 4, 4)), rng.uniform(-0.1, 0.1, (8, 8, 8))]
    model = _Negate()
    got = reconstruction_mae(model, vols)
    expected = np.mean(np.concatenate([2 * np.abs(v.astype(np.float32)).ravel() for v in vols]))
    assert got == pytest.approx(expected, rel=1e-6)
    # Not the mean of the per-volume means (which the small first volume would dominate).
    assert abs(got - np.mean([2 * np.abs(v).mean() for v in vols])) > 0.1
    assert model.calls == 2
    with pytest.raises(ValueError):
        reconstruction_mae(model, [])


def test_reconstruction_mae_of_a_model_against_direct_encoding(tmp_path):
    import medgen

    model = medgen.build("tiny", size=32, seed=3, encoder=True)
    data = make_dataset(tmp_path / "d", n=3, size=32)
    vols = list(heldout_volumes(data, 2))
    stored = [np.load(data / "volumes" / f"v{i}.npy").astype(np.float32) for i in range(2)]
    np.testing.assert_array_equal(np.stack(vols), np.stack(stored))  # first n, sorted ids, float32

    with torch.no_grad():
        x = torch.from_numpy(np.stack(stored))[:, None]
        z = model.encoder.encode(x)
        recon = model.generator.high(model.generator.features(z))[:, 0].numpy()
    direct = float(np.mean(np.abs(recon.astype(np.float64) - np.stack(stored).astype(np.float64))))
    assert reconstruction_mae(model, vols) == pytest.approx(direct, rel=1e-4)


# ---------------------------------------------------------------------- training speed
def test_seconds_per_iteration(tmp_path):
    run = tmp_path / "run"
    assert seconds_per_iteration(run) is None  # no metrics.csv
    run.mkdir()
    (run / "metrics.csv").write_text("iteration,loss_D,it_per_s\n25,1.3,2.0\n50,1.2,4.0\n75,1.1,0.1\n100,1.0,\n")
    # median of 1/rate over the intervals: 0.5, 0.25, 10 → 0.5 (the slow checkpoint interval does not dominate)
    assert seconds_per_iteration(run) == pytest.approx(0.5)
    (run / "metrics.csv").write_text("iteration,loss_D\n25,1.3\n")
    assert seconds_per_iteration(run) is None
