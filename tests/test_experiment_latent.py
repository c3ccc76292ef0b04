"""``medgen experiment latent``: direction finding, traversals, the command end to end."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medgen.api import HAGANModel
from medgen.core.errors import UsageError
from medgen.experiments import latent
from medgen.families.hagan import HAGANConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WINDOW = (-1024.0, 600.0)


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- the fit on planted data


def test_fit_direction_recovers_a_planted_linear_factor():
    rng = np.random.default_rng(3)
    dim, n = 24, 400
    d_true = _unit(rng, dim)
    z = rng.standard_normal((n, dim))
    signal, noise = 0.03, 0.006
    y = 0.15 + signal * (z @ d_true) + rng.normal(0.0, noise, n)
    fit = latent.fit_direction(z, y, factor="lung_fraction", seed=0)

    assert np.linalg.norm(fit.direction) == pytest.approx(1.0)
    assert float(fit.direction @ d_true) > 0.95  # sign included: +alpha must increase the factor
    # Population R² of the best linear predictor: signal² / (signal² + noise²) = 0.962.
    assert fit.r2_heldout == pytest.approx(signal**2 / (signal**2 + noise**2), abs=0.04)
    assert fit.weight_norm == pytest.approx(signal, rel=0.1)  # change of the factor per latent SD along d
    assert (fit.n_train, fit.n_heldout) == (300, 100)
    # Independent reference: ordinary least squares on all codes points the same way.
    coef, *_ = np.linalg.lstsq(np.c_[z, np.ones(n)], y, rcond=None)
    assert float(fit.direction @ coef[:dim] / np.linalg.norm(coef[:dim])) > 0.99


def test_fit_direction_without_signal_has_no_heldout_skill():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((200, 16))
    fit = latent.fit_direction(z, rng.normal(0.2, 0.01, 200), seed=1)
    assert fit.r2_heldout < 0.1


def test_fit_direction_skips_unmeasurable_volumes_and_flags_a_constant_factor():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((40, 6))
    y = z[:, 0] * 0.1
    y[:8] = np.nan  # volumes without a body
    fit = latent.fit_direction(z, y)
    assert fit.n_train + fit.n_heldout == 32
    assert abs(fit.direction[0]) > 0.99

    flat = latent.fit_direction(z, np.full(40, 0.05))
    assert not flat.direction.any() and math.isnan(flat.r2_heldout) and "same on every" in flat.note


def test_traversal_codes_move_along_the_direction_only():
    rng = np.random.default_rng(6)
    bases, d = rng.standard_normal((3, 10)), _unit(rng, 10)
    alphas = latent.alpha_grid(5, 2.0)
    assert alphas.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    z = latent.traversal_codes(bases, d, alphas)
    assert z.shape == (3, 5, 10)
    step = z.astype(np.float64) - bases[:, None, :]
    np.testing.assert_allclose(step @ d, np.broadcast_to(alphas, (3, 5)), atol=1e-5)
    residual = step - (step @ d)[..., None] * d
    assert np.abs(residual).max() < 1e-5


def test_spearman_pooled_and_within_bases_against_ranks():
    from scipy.stats import rankdata

    alphas = np.array([-1.0, 0.0, 1.0, 2.0])
    values = np.array([[0.10, 0.20, 0.30, 0.40], [0.05, 0.15, 0.12, 0.50]])
    pooled, within = latent.spearman(alphas, values)
    a = np.tile(alphas, 2)
    expected = np.corrcoef(rankdata(a), rankdata(values.ravel()))[0, 1]
    assert pooled == pytest.approx(expected)
    # base 0 is monotone (rho = 1); base 1 swaps one pair: rho = 1 - 6*2/(4*15) = 0.8.
    assert within == pytest.approx((1.0 + 0.8) / 2)
    assert all(math.isnan(r) for r in latent.spearman(alphas, np.full((2, 4), 0.3)))


@pytest.mark.parametrize("kwargs", [{"n_codes": 4}, {"n_bases": 0}, {"steps": 1}, {"max_alpha": 0.0},
                                    {"batch_size": 0}, {"seed": -1}])
def test_bad_options_are_usage_errors(kwargs):
    options = {"n_codes": 16, "n_bases": 1, "steps": 3, "max_alpha": 3.0, "batch_size": 2, "seed": 0} | kwargs
    with pytest.raises(UsageError):
        latent.check_options(**options)


# --------------------------------------------------------------------------- traversals with a planted generator


class PlantedThorax(torch.nn.Module):
    """A deterministic stand-in for G whose anatomy is a known function of z.

    Body: a cylinder along z (all slices). Lung: an anterior cylinder of radius 8
    voxels spanning round(16 + 2.5·z·d_lung) central axial slices. Bone: a
    posterior rod of radius 3 spanning round(16 + 2.5·z·d_bone) central slices.
    Output in [-1, 1] through the CT window, like the real generator's.
    """

    def __init__(self, cfg: HAGANConfig, d_lung: np.ndarray, d_bone: np.ndarray) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("d", torch.tensor(np.stack([d_lung, d_bone], 1), dtype=torch.float32))

    def features(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return z @ self.d  # [B, 2]: (z·d_lung, z·d_bone)

    def masks(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.cfg.size
        c = (s - 1) / 2
        x, y = np.meshgrid(np.arange(s) - c, np.arange(s) - c, indexing="ij")
        zs = np.arange(s)

        def span(score: float) -> np.ndarray:  # the central axial slices a structure spans
            h = int(np.clip(round(16 + 2.5 * score), 1, s - 2))
            first = (s - h) // 2
            return (zs >= first) & (zs < first + h)

        body2d = x**2 + y**2 <= 14.5**2
        lung2d = x**2 + (y - 3.0) ** 2 <= 8.0**2  # y increases anteriorly
        bone2d = x**2 + (y + 10.0) ** 2 <= 3.0**2
        body = np.broadcast_to(body2d[..., None], (s, s, s))
        lung = lung2d[..., None] & span(scores[0])[None, None, :]
        bone = bone2d[..., None] & span(scores[1])[None, None, :]
        return body, lung, bone

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, chunk: int | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`Generator.generate` (the one generation path the model calls), unchunked."""
        x = self.high(self.features(z, labels))
        if out is None:
            return x
        out.copy_(x)
        return out

    def hu(self, scores: np.ndarray) -> np.ndarray:
        body, lung, bone = self.masks(scores)
        vol = np.where(body, 40.0, -1024.0)
        vol[lung] = -850.0
        vol[bone] = 700.0
        return vol.astype(np.float32)

    def high(self, a: torch.Tensor) -> torch.Tensor:
        vols = [self.hu(row) for row in a.double().cpu().numpy()]
        x = (np.stack(vols) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]) * 2 - 1
        return torch.from_numpy(x.astype(np.float32))[:, None]

    def truth(self, z: np.ndarray) -> np.ndarray:
        """(lung fraction, bone fraction) of each code, counted from the planted masks."""
        out = []
        for row in np.asarray(z, np.float64) @ self.d.double().numpy():
            body, lung, bone = self.masks(row)
            out.append([lung.sum() / body.sum(), bone.sum() / body.sum()])
        return np.asarray(out)


def _planted_model(dim: int = 8, modality: str = "ct"):
    rng = np.random.default_rng(11)
    d_lung = _unit(rng, dim)
    d_bone = _unit(rng, dim)
    d_bone -= (d_bone @ d_lung) * d_lung
    d_bone /= np.linalg.norm(d_bone)
    cfg = HAGANConfig(size=32, latent_dim=dim, width=0.125, norm_groups=2)
    gen = PlantedThorax(cfg, d_lung, d_bone).eval()
    run_config = SimpleNamespace(preprocess={"modality": modality, "hu_window": list(WINDOW)}, data=None)
    return HAGANModel(cfg, gen, None, run_config), d_lung, d_bone


def test_measurements_match_the_planted_anatomy():
    model, *_ = _planted_model()
    z = model.sample_latents(6, seed=2)
    measured = latent.measure_codes(model, z, (1.0, 1.0, 1.0), batch_size=4, keep=[1])
    np.testing.assert_allclose(measured.values, model.generator.truth(z), rtol=0, atol=1e-12)
    assert set(measured.slices) == {1} and measured.slices[1]["axial"].shape == (32, 32)


def test_traversals_follow_planted_directions(tmp_path):
    from scipy.stats import spearmanr

    model, d_lung, d_bone = _planted_model()
    result = latent.latent_traversals(model, tmp_path, n_codes=64, n_bases=3, steps=7, seed=0, progress=False,
                                      batch_size=16)
    directions = json.loads((tmp_path / latent.DIRECTIONS_NAME).read_text())["directions"]
    found = {f: np.asarray(directions[f]["direction"]) for f in latent.FACTORS}
    assert float(found["lung_fraction"] @ d_lung) > 0.95
    assert float(found["bone_fraction"] @ d_bone) > 0.95
    for f in latent.FACTORS:
        info = result["directions"][f]
        assert info["r2_heldout"] > 0.8
        assert info["spearman_within_base"] == pytest.approx(1.0)  # each base: factor rises with alpha
        assert info["spearman"] > 0.7  # pooled over bases that start at different values

    rows = result["rows"]
    assert [(r["direction"], r["alpha"]) for r in rows] == [
        (f, a) for f in latent.FACTORS for a in np.linspace(-3, 3, 7).tolist()]
    # Independent reference: the planted anatomy of the same traversal codes.
    bases = model.sample_latents(3, seed=0, start=latent.BASE_START)
    for f in latent.FACTORS:
        z = latent.traversal_codes(bases, found[f], latent.alpha_grid(7, 3.0))
        truth = model.generator.truth(z.reshape(-1, 8)).reshape(3, 7, 2)
        mine = [r for r in rows if r["direction"] == f]
        np.testing.assert_allclose([r["lung_fraction_mean"] for r in mine], truth[..., 0].mean(0), atol=1e-12)
        np.testing.assert_allclose([r["bone_fraction_std"] for r in mine], truth[..., 1].std(0, ddof=1), atol=1e-12)
        k = latent.FACTORS.index(f)
        pooled = spearmanr(np.broadcast_to(latent.alpha_grid(7, 3.0), (3, 7)).ravel(), truth[..., k].ravel())
        assert result["directions"][f]["spearman"] == pytest.approx(pooled.statistic)
    lung_rows = [r for r in rows if r["direction"] == "lung_fraction"]
    assert lung_rows[-1]["lung_fraction_mean"] > 1.5 * lung_rows[0]["lung_fraction_mean"]
    png = (tmp_path / latent.FIGURE_NAME).read_bytes()
    assert png.startswith(PNG_MAGIC)


def test_mri_models_are_refused(tmp_path):
    model, *_ = _planted_model(modality="mri")
    with pytest.raises(UsageError, match="CT model"):
        latent.latent_traversals(model, tmp_path, n_codes=8, n_bases=1, steps=3, progress=False)


# --------------------------------------------------------------------------- the command


def test_command_rejects_bad_options_before_training(tmp_path):
    from medgen.cli import main

    code = main(["experiment", "latent", "--scale", "smoke", "--work", str(tmp_path / "w"), "--out",
                 str(tmp_path / "o"), "--steps", "1", "--no-progress"])
    assert code == 2
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_smoke_experiment_writes_table_figure_and_command(tmp_path):
    from medgen.cli import main

    out = tmp_path / "out"
    argv = ["experiment", "latent", "--scale", "smoke", "--work", str(tmp_path / "work"), "--out", str(out),
            "--steps", "3", "--n-bases", "2", "--n-codes", "8", "--no-progress"]
    assert main(argv) == 0
    with open(out / "latent.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(latent.COLUMNS)
    assert [(r["direction"], float(r["alpha"])) for r in rows] == [
        (f, a) for f in latent.FACTORS for a in (-3.0, 0.0, 3.0)]
    # alpha = 0 is the base codes themselves, whichever the direction: the same volumes, the same values.
    at0 = [r for r in rows if float(r["alpha"]) == 0.0]
    assert at0[0]["lung_fraction_mean"] == at0[1]["lung_fraction_mean"]
    assert at0[0]["bone_fraction_mean"] == at0[1]["bone_fraction_mean"]
    for r in rows:
        assert 0.0 <= float(r["lung_fraction_mean"]) <= 1.0 and 0.0 <= float(r["bone_fraction_mean"]) <= 1.0
    md = (out / "latent.md").read_text()
    assert "medgen experiment latent --scale smoke" in md and "--n-codes 8" in md and "--steps 3" in md
    assert (out / latent.FIGURE_NAME).read_bytes().startswith(PNG_MAGIC)
    record = json.loads((out / "experiment.json").read_text())
    assert record["figures"] == [latent.FIGURE_NAME]
    directions = json.loads((out / latent.DIRECTIONS_NAME).read_text())["directions"]
    for f in latent.FACTORS:
        d = np.asarray(directions[f]["direction"])
        assert d.shape == (128,)  # the tiny preset's latent_dim
        assert np.linalg.norm(d) == pytest.approx(1.0) or not d.any()
