"""The dimensionality metric: principal-component spectrum of coarse volumes, real vs generated."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from medgen.core.errors import UsageError
from medgen.metrics.compare import compare_reports
from medgen.metrics.dimensionality import coarse_matrix, dimensionality, save_spectrum_figure, spectrum, summarise
from medgen.metrics.evaluate import evaluate, format_table

S = 32  # volume edge; the metric averages to 16³ blocks of 2³ voxels


def _patterns(k: int, seed: int = 0) -> np.ndarray:
    """k smooth random 32³ patterns, constant on 2³ blocks (so block averaging keeps them exactly)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((k, 16, 16, 16))
    return coarse.repeat(2, axis=1).repeat(2, axis=2).repeat(2, axis=3)


def _set(coefficients: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    return np.einsum("nk,kxyz->nxyz", coefficients, patterns).astype(np.float32)


def test_spectrum_equals_scikit_learn_pca_and_the_summary_follows_its_definitions():
    x = np.random.default_rng(3).standard_normal((20, 50)) * np.linspace(3.0, 0.1, 50)
    lam = spectrum(x)
    ref = PCA().fit(x).explained_variance_  # ddof 1, descending
    np.testing.assert_allclose(lam[: len(ref)], ref, rtol=1e-10, atol=1e-12)
    s = summarise(lam, n_voxels=50)
    assert s["participation_ratio"] == pytest.approx(ref.sum() ** 2 / (ref**2).sum(), rel=1e-10)
    share = np.cumsum(ref) / ref.sum()
    assert s["components_90"] == int(np.argmax(share >= 0.9)) + 1
    assert s["first_share"] == pytest.approx(ref[0] / ref.sum(), rel=1e-10)
    assert s["total_variance"] == pytest.approx(x.var(axis=0, ddof=1).sum() / 50, rel=1e-10)
    np.testing.assert_allclose(s["cumulative"], share[:32], rtol=1e-10)


def test_coarse_matrix_is_the_block_mean():
    v = np.random.default_rng(1).standard_normal((2, 32, 32, 32)).astype(np.float32)
    m = coarse_matrix(list(v))
    ref = v.reshape(2, 16, 2, 16, 2, 16, 2).mean(axis=(2, 4, 6)).reshape(2, -1)
    np.testing.assert_allclose(m, ref, rtol=1e-5, atol=1e-6)
    assert coarse_matrix([v[0, :8, :8, :8][None]]).shape == (1, 8**3)  # smaller than the grid: its own size
    with pytest.raises(UsageError, match="3D volumes"):
        coarse_matrix([v[0, 0]])


def test_k_independent_factors_give_k_directions_and_one_factor_gives_one():
    p = _patterns(3)
    p = np.linalg.qr(p.reshape(3, -1).T)[0].T.reshape(3, S, S, S) * 40.0  # orthogonal, equal norms
    rng = np.random.default_rng(0)
    independent = _set(rng.standard_normal((400, 3)), p)
    tied = _set(np.repeat(rng.standard_normal((400, 1)), 3, axis=1), p)  # the three factors move together
    out = dimensionality(list(independent), list(tied))
    assert out["grid"] == 16
    assert out["real"]["participation_ratio"] == pytest.approx(3.0, rel=0.12)
    assert out["real"]["components_90"] == 3
    assert out["fake"]["participation_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert out["fake"]["components_90"] == 1 and out["fake"]["first_share"] == pytest.approx(1.0)
    # the same spread per voxel: what differs is the number of directions, not the amount of variation
    assert out["fake"]["total_variance"] == pytest.approx(out["real"]["total_variance"], rel=0.35)
    same = dimensionality([p[0]] * 3, [p[0]] * 3)
    assert same["fake"]["participation_ratio"] == 0.0 and same["fake"]["components_90"] == 0
    with pytest.raises(UsageError, match="equal size"):
        dimensionality(list(independent[:3]), list(tied[:2]))


def test_evaluate_reports_it_at_equal_sizes_with_the_real_reference_and_a_figure(tmp_path):
    p = _patterns(2, seed=5) * 0.04  # inside [-1, 1]: no modality needed
    rng = np.random.default_rng(2)
    real = _set(rng.standard_normal((12, 2)), p)  # body and lung vary independently
    fake = _set(np.repeat(rng.standard_normal((8, 1)), 2, axis=1) + 0.01 * rng.standard_normal((8, 2)), p)  # tied
    assert max(np.abs(real).max(), np.abs(fake).max()) < 1
    ev = evaluate(real, fake, metrics="dimensionality", progress=False, figures_dir=tmp_path)
    m = ev.metrics["dimensionality"]
    assert m["n_real"] == m["n_fake"] == 8  # the larger set subsampled to the smaller one's size
    assert m["value"] == m["details"]["fake"]["participation_ratio"] < 1.05
    assert m["details"]["real"]["participation_ratio"] > 1.5
    table = ev.table()
    assert "dimensionality (real, reference)" in table
    assert "the samples vary along fewer independent directions than real volumes" in table
    figure = tmp_path / "dimensionality.png"
    assert figure.is_file() and figure.read_bytes()[:4] == b"\x89PNG" and str(figure) in ev.report["figures"]
    # a collapsed set: little variation, spread over many directions (noise): called what it is
    collapsed = (fake[:1] + 0.002 * rng.standard_normal((8, S, S, S))).astype(np.float32)
    table = evaluate(real, collapsed, metrics="dimensionality", progress=False).table()
    assert "vary less than half as much as real ones, so their directions are mostly noise" in table
    assert "fewer independent directions" not in table
    # generated volumes all alike: participation ratio 0, called collapsed rather than left without a note
    alike = np.repeat(fake[:1], 8, axis=0)
    table = evaluate(real, alike, metrics="dimensionality", progress=False).table()
    assert "dimensionality: the generated set's variance spreads over 0.00 directions" in table
    assert "so their directions are mostly noise" in table
    # a set against itself: no flag
    same = evaluate(real, real.copy(), metrics="dimensionality", progress=False)
    assert "fewer independent directions" not in format_table(same.report)
    assert same.metrics["dimensionality"]["value"] == pytest.approx(
        same.metrics["dimensionality"]["details"]["real"]["participation_ratio"], rel=1e-9)


def test_compare_prefers_the_participation_ratio_closer_to_the_real_one(tmp_path):
    def report(pr):
        return {"metrics": {"dimensionality": {"value": pr, "details": {"real": {"participation_ratio": 3.0}}}}}

    rows = {r["metric"]: r for r in compare_reports(report(2.5), report(1.2))}
    assert rows["dimensionality (closer to real is better)"]["a_better"] is True
    rows = {r["metric"]: r for r in compare_reports(report(4.0), report(2.5))}  # |4 - 3| > |2.5 - 3|
    assert rows["dimensionality (closer to real is better)"]["a_better"] is False
    save_spectrum_figure({"grid": 16, "real": summarise(np.array([2.0, 1.0]), 8),
                          "fake": summarise(np.array([3.0, 0.0]), 8)}, tmp_path / "s.pdf")
    assert (tmp_path / "s.pdf").read_bytes()[:4] == b"%PDF"
