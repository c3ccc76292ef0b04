"""``medgen experiment features``: cross-validated ridge R², the voxel-PCA baseline without leakage, the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from medgen.cli import main
from medgen.core.errors import InputError, UsageError
from medgen.experiments import features as fx


def _r2_by_hand(y: np.ndarray, pred: np.ndarray) -> float:
    return 1.0 - float(np.sum((y - pred) ** 2)) / float(np.sum((y - y.mean()) ** 2))


# ---------------------------------------------------------------------- ridge CV on planted data
def test_exact_linear_target_gets_r2_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)) * rng.uniform(0.1, 10.0, size=8)  # features on very different scales
    y = x @ rng.normal(size=8) + 5.0
    res = fx.cross_validated_r2(x, y, fx.ridge_pipeline, folds=5, seed=0)
    assert len(res.r2) == 5 and res.r2.min() > 0.99
    assert res.pooled_r2(y) > 0.99
    # Each fold's R² is 1 − SS_res/SS_tot on that fold's own test samples.
    for (_, test), r2 in zip(res.folds, res.r2):
        assert r2 == pytest.approx(_r2_by_hand(y[test], res.predictions[test]), abs=1e-12)
    # The folds partition the samples: every sample predicted exactly once, out of fold.
    assert np.sort(np.concatenate([te for _, te in res.folds])).tolist() == list(range(60))
    assert np.all(np.isfinite(res.predictions))


def test_pure_noise_target_gets_r2_at_most_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 20))
    y = rng.normal(size=80)
    res = fx.cross_validated_r2(x, y, fx.ridge_pipeline, folds=5, seed=0)
    assert res.mean < 0.05
    assert res.pooled_r2(y) < 0.05
    # With nothing to learn, leave-one-out picks a strong penalty.
    assert np.median(res.alphas) >= 10.0


def test_noisy_linear_target_r2_matches_signal_share():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 5))
    signal = x @ np.array([1.0, -1.0, 0.5, 0.0, 0.0])  # variance 2.25
    y = signal + rng.normal(scale=1.5, size=400)  # noise variance 2.25: population R² = 0.5
    res = fx.cross_validated_r2(x, y, fx.ridge_pipeline, folds=5, seed=0)
    assert res.pooled_r2(y) == pytest.approx(0.5, abs=0.08)


def test_same_seed_same_folds_and_too_few_samples():
    a = fx.kfold_splits(20, 4, seed=3)
    b = fx.kfold_splits(20, 4, seed=3)
    assert all(np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[1], q[1]) for p, q in zip(a, fx.kfold_splits(20, 4, seed=4)))
    with pytest.raises(InputError, match="too few"):
        fx.kfold_splits(7, 4, seed=0)
    with pytest.raises(UsageError, match="--folds"):
        fx.kfold_splits(20, 1, seed=0)


# ---------------------------------------------------------------------- voxel PCA baseline
def test_pca_baseline_is_fitted_on_training_folds_only():
    """A PCA that saw the test fold would have another mean and other axes, and predict differently."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(4)
    n, d, k = 40, 30, 5
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    y = x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.1, size=n)
    folds = fx.kfold_splits(n, 4, seed=0)
    res = fx.cross_validated_r2(x, y, lambda: fx.pca_ridge_pipeline(k), folds)
    pca_all = PCA(n_components=k, svd_solver="full").fit(x)
    for (train, test), est in zip(res.folds, res.estimators):
        pca = est.named_steps["pca"]
        assert pca.n_samples_ == len(train)
        np.testing.assert_allclose(pca.mean_, x[train].mean(axis=0), rtol=1e-10, atol=1e-10)
        assert not np.allclose(pca.mean_, pca_all.mean_)
        ref = PCA(n_components=k, svd_solver="full").fit(x[train])
        np.testing.assert_allclose(np.abs(pca.components_ @ ref.components_.T), np.eye(k), atol=1e-8)
        # Independent re-computation of the fold's predictions: project with the training
        # fold's own principal axes, ridge with the penalty the fold chose.
        scores = (x[train] - x[train].mean(0)) @ ref.components_.T
        ridge = Ridge(alpha=est.named_steps["ridge"].alpha_).fit(scores, y[train])
        pred = ridge.predict((x[test] - x[train].mean(0)) @ ref.components_.T)
        np.testing.assert_allclose(res.predictions[test], pred, rtol=1e-7, atol=1e-7)
        # A PCA fitted on all rows (test fold included) predicts otherwise.
        leak_scores = (x - pca_all.mean_) @ pca_all.components_.T
        leak = Ridge(alpha=est.named_steps["ridge"].alpha_).fit(leak_scores[train], y[train])
        assert not np.allclose(leak.predict(leak_scores[test]), pred, rtol=1e-4, atol=1e-4)


def test_pca_components_rule():
    folds = fx.kfold_splits(96, 5, seed=0)  # training folds of 76 and 77 volumes
    assert fx.pca_components(128, folds, 4096) == 75
    assert fx.pca_components(32, folds, 4096) == 32
    assert fx.pca_components(128, folds, 10) == 10


def test_downsample_is_box_mean():
    rng = np.random.default_rng(5)
    v = rng.uniform(-1, 1, size=(32, 32, 32)).astype(np.float32)
    want = v.reshape(16, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5)).reshape(-1)
    np.testing.assert_allclose(fx.downsample(v, 16), want, rtol=1e-5, atol=1e-6)


def test_choose_targets():
    common = {"file": "volumes/v.npy", "spacing": "1x1x1", "k": "1"}
    rows = [{"id": "a", **common, "lung_ml": "3.5", "site": "x", "blank": ""},
            {"id": "b", **common, "lung_ml": "4.0", "site": "y", "blank": "2"}]
    assert fx.choose_targets(rows, None, phantoms=True) == list(fx.PHANTOM_TARGETS)
    assert fx.choose_targets(rows, None, phantoms=False) == ["lung_ml"]  # constant k, text site left out
    assert fx.choose_targets(rows, "lung_ml, k", phantoms=False) == ["lung_ml", "k"]
    with pytest.raises(UsageError, match="no column 'age'"):
        fx.choose_targets(rows, "age", phantoms=False)


# ---------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def smoke_work(tmp_path_factory) -> Path:
    """The smoke-scale workspace; shared with the other experiment tests of this session (it is reused by design)."""
    return tmp_path_factory.getbasetemp() / "experiments-smoke-work"


def _png_ok(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.mark.slow
def test_features_smoke(smoke_work: Path, tmp_path: Path, capsys):
    out = tmp_path / "features"
    code = main(["experiment", "features", "--scale", "smoke", "--work", str(smoke_work), "--out", str(out),
                 "--no-progress", "--device", "cpu"])
    assert code == 0
    with open(out / "features.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["target", "model", "features", "dim", "r2_mean", "r2_std", "r2_oof", "n"]
    assert len(rows) == 3 * 7  # 3 targets × (3 models × trained/untrained + voxel PCA)
    assert {r["target"] for r in rows} == set(fx.PHANTOM_TARGETS)
    assert {(r["model"], r["features"]) for r in rows} == {
        *((m, f) for m in ("HA-GAN", "VAE-GAN", "α-GAN") for f in ("trained encoder", "untrained encoder")),
        ("", "voxel PCA (16³)")}
    for r in rows:
        assert int(r["n"]) == 12  # 6 training + 6 held-out phantoms
        for key in ("r2_mean", "r2_std", "r2_oof"):
            assert math.isfinite(float(r[key]))
        assert float(r["r2_mean"]) <= 1.0 and float(r["r2_oof"]) <= 1.0 and float(r["r2_std"]) >= 0.0
        # 12 volumes, 5 folds: the smallest training fold holds 9 volumes, rank 8; latent codes of the tiny presets
        assert int(r["dim"]) == {"HA-GAN": 128, "VAE-GAN": 64, "α-GAN": 64, "": 8}[r["model"]]
    # the baselines' encoders were trained in the workspace, as the table says
    assert (smoke_work / "runs" / "vae-gan-32").is_dir() and (smoke_work / "runs" / "alpha-gan-32").is_dir()
    # their trained and untrained latents differ (the untrained one is its own random initialisation)
    by = {(r["target"], r["model"], r["features"]): r for r in rows}
    assert by[("lung_volume_ml", "VAE-GAN", "trained encoder")]["r2_oof"] != \
        by[("lung_volume_ml", "VAE-GAN", "untrained encoder")]["r2_oof"]
    md = (out / "features.md").read_text()
    assert "medgen experiment features" in md and "r2_oof" in md
    _png_ok(out / "features.png")

    # --targets with a column the manifest lacks: one clear line, exit code 2.
    capsys.readouterr()
    code = main(["experiment", "features", "--scale", "smoke", "--work", str(smoke_work), "--out", str(out),
                 "--no-progress", "--device", "cpu", "--targets", "lung_volume_ml,weight_kg"])
    assert code == 2
    assert "weight_kg" in capsys.readouterr().err
    code = main(["experiment", "features", "--scale", "smoke", "--work", str(smoke_work), "--out", str(out),
                 "--no-progress", "--device", "cpu", "--families", "hagan,vae"])
    assert code == 2
    assert "--families 'hagan,vae': choose distinct models with an encoder from hagan, vae-gan, alpha-gan" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_features_needs_an_encoder(smoke_work: Path, tmp_path: Path, capsys):
    # A run trained without encoder (one iteration on the smoke training set).
    from medgen.experiments.workspace import SCALES, Workspace

    train_dir, _ = Workspace(smoke_work, SCALES["smoke"], progress=False).datasets(32)
    run = tmp_path / "run"
    assert main(["train", str(train_dir), "--out", str(run), "--preset", "tiny", "--iters", "1", "--batch", "2",
                 "--no-encoder", "--split-fractions", "1,0,0", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    code = main(["experiment", "features", "--scale", "smoke", "--work", str(smoke_work), "--run", str(run),
                 "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    assert code == 2
    assert "no encoder" in capsys.readouterr().err


@pytest.mark.slow
def test_workspace_evaluates_with_a_runs_encoder_as_medgen_evaluate_does(smoke_work: Path, tmp_path: Path):
    import json

    from medgen.experiments.workspace import SCALES, Workspace

    ws = Workspace(smoke_work, SCALES["smoke"], device="cpu", progress=False)
    run = ws.main_model()
    _, heldout = ws.datasets(32)
    samples = ws.samples(run, "synthesis-32")
    report = ws.evaluate(heldout, samples, tmp_path / "ws.json", metrics="fid,mmd", features="encoder", weights=str(run))
    assert report == json.loads((tmp_path / "ws.json").read_text())
    assert report["extractor"]["name"] == "encoder" and report["metrics"]["fid"]["n_fake"] == 6
    assert main(["evaluate", "--real", str(heldout), "--fake", str(samples), "--out", str(tmp_path / "cli.json"),
                 "--features", "encoder", "--weights", str(run), "--metrics", "fid,mmd", "--device", "cpu",
                 "--no-figures", "--no-progress"]) == 0
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert cli["extractor"] == report["extractor"]  # the same description, so the same feature-cache entries
    assert cli["metrics"]["fid"]["value"] == pytest.approx(report["metrics"]["fid"]["value"])
