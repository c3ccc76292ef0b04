"""``medgen experiment embedding``: covariance-ellipse geometry, MDS, the table rows, the CLI and evaluate's figure."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from medgen.cli import main
from medgen.core.errors import InputError, UsageError
from medgen.experiments import embedding as em


# ---------------------------------------------------------------------- ellipses
def test_coverage_and_radius_are_the_chi_square_quantile():
    from scipy.stats import chi2

    for p in (0.5, 0.9, 0.95, 0.99):
        assert em.n_std_for_coverage(p) == pytest.approx(math.sqrt(chi2.ppf(p, df=2)), rel=1e-10)
        assert em.coverage_for_n_std(em.n_std_for_coverage(p)) == pytest.approx(p, rel=1e-12)
    assert em.coverage_for_n_std(2.0) == pytest.approx(chi2.cdf(4.0, df=2), rel=1e-12)  # 0.8647
    with pytest.raises(UsageError, match="coverage"):
        em.n_std_for_coverage(1.0)


def test_ellipse_of_four_points_by_hand():
    # Points (±1, 0), (0, ±2): mean 0, sample covariance diag(2/3, 8/3) (n − 1 = 3).
    pts = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]) + [5.0, -3.0]
    e = em.covariance_ellipse(pts, n_std=2.0)
    np.testing.assert_allclose(e.center, [5.0, -3.0])
    np.testing.assert_allclose(e.cov, np.diag([2 / 3, 8 / 3]), atol=1e-12)
    assert e.semi_axes[0] == pytest.approx(2.0 * math.sqrt(8 / 3))
    assert e.semi_axes[1] == pytest.approx(2.0 * math.sqrt(2 / 3))
    assert abs(math.sin(math.radians(e.angle_deg))) == pytest.approx(1.0)  # major axis along y
    assert e.area == pytest.approx(math.pi * 4.0 * math.sqrt(8 / 3 * 2 / 3))
    # (0, 2) lies at Mahalanobis distance 2 / sqrt(8/3) = 1.2247.
    assert e.mahalanobis([5.0, -1.0])[0] == pytest.approx(2.0 / math.sqrt(8 / 3))
    b = 2.0 * math.sqrt(2 / 3)  # the minor semi-axis, along x
    assert e.contains(np.array([[5.0 + 0.99 * b, -3.0], [5.0 + 1.01 * b, -3.0]])).tolist() == [True, False]


def test_axis_aligned_gaussian_cloud():
    rng = np.random.default_rng(0)
    sx, sy = 3.0, 1.0
    pts = rng.normal(size=(40_000, 2)) * [sx, sy] + [10.0, -4.0]
    for n_std in (1.0, 2.0, em.n_std_for_coverage(0.95)):
        e = em.covariance_ellipse(pts, n_std)
        assert e.semi_axes[0] == pytest.approx(n_std * sx, rel=0.02)
        assert e.semi_axes[1] == pytest.approx(n_std * sy, rel=0.02)
        assert abs(math.sin(math.radians(e.angle_deg))) < 0.02  # major axis along x
        assert e.area == pytest.approx(math.pi * n_std**2 * sx * sy, rel=0.03)
        # Share of points inside ≈ P(χ²(2) ≤ n_std²) = 1 − exp(−n_std²/2).
        assert e.fraction_inside(pts) == pytest.approx(em.coverage_for_n_std(n_std), abs=0.01)


def test_rotated_cloud_and_mahalanobis_against_scipy():
    from scipy.spatial.distance import mahalanobis

    rng = np.random.default_rng(1)
    t = math.radians(30.0)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    pts = (rng.normal(size=(20_000, 2)) * [4.0, 0.5]) @ rot.T
    e = em.covariance_ellipse(pts, 2.0)
    assert math.sin(math.radians(e.angle_deg - 30.0)) == pytest.approx(0.0, abs=0.01)  # 30° or 210°
    inv = np.linalg.inv(np.cov(pts, rowvar=False))
    probe = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]])
    want = [mahalanobis(p, pts.mean(axis=0), inv) for p in probe]
    np.testing.assert_allclose(e.mahalanobis(probe), want, rtol=1e-10)


def test_ellipse_needs_three_points():
    with pytest.raises(InputError, match="at least 3"):
        em.covariance_ellipse(np.zeros((2, 2)))


# ---------------------------------------------------------------------- MDS
def test_classical_mds_is_the_principal_axes_projection():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 12)) * np.linspace(5, 0.1, 12)
    got = em.classical_mds(em.euclidean_distances(x))
    want = PCA(n_components=2).fit_transform(x)
    np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-7, atol=1e-7)


def test_mds_recovers_planar_data_exactly():
    rng = np.random.default_rng(3)
    plane = rng.normal(size=(25, 2)) * [3.0, 1.0]
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    feats = plane @ q[:2] + rng.normal(size=16)  # a 2D cloud rotated into 16 dimensions, shifted
    for method in ("classical", "metric"):
        a, b = em.mds_embedding([feats[:10], feats[10:]], seed=0, method=method)
        assert a.shape == (10, 2) and b.shape == (15, 2)
        coords = np.concatenate([a, b])
        np.testing.assert_allclose(em.euclidean_distances(coords), em.euclidean_distances(plane), atol=1e-3)
        assert em.stress1(em.euclidean_distances(feats), coords) < 1e-4


def test_metric_mds_lowers_stress_of_its_classical_start():
    rng = np.random.default_rng(4)
    feats = [rng.normal(size=(12, 40)), rng.normal(loc=0.7, size=(12, 40)), rng.normal(scale=2.0, size=(8, 40))]
    dist = em.euclidean_distances(np.concatenate(feats))
    classical = np.concatenate(em.mds_embedding(feats, method="classical"))
    metric = np.concatenate(em.mds_embedding(feats, seed=0, method="metric"))
    assert em.stress1(dist, metric) < em.stress1(dist, classical)
    again = np.concatenate(em.mds_embedding(feats, seed=0, method="metric"))
    np.testing.assert_array_equal(metric, again)  # deterministic
    with pytest.raises(UsageError, match="MDS method"):
        em.mds_embedding(feats, method="tsne")


# ---------------------------------------------------------------------- table rows and drawing
def test_embedding_rows_by_hand():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(4000, 2)) * [2.0, 1.0]
    shifted = rng.normal(size=(4000, 2)) * [2.0, 1.0] + [0.0, 3.0]  # 3 real SDs up (y spread 1)
    wide = rng.normal(size=(4000, 2)) * [6.0, 3.0]
    n_std = em.n_std_for_coverage(0.95)
    rows = {r["group"]: r for r in em.embedding_rows({"real": real, "shifted": shifted, "wide": wide}, "real", n_std)}
    assert rows["real"]["dist_to_real_sd"] == 0.0
    assert rows["real"]["frac_in_real_ellipse"] == pytest.approx(0.95, abs=0.01)
    assert rows["shifted"]["dist_to_real_sd"] == pytest.approx(3.0, abs=0.1)
    assert rows["wide"]["dist_to_real_sd"] == pytest.approx(0.0, abs=0.15)
    # A cloud 3× as wide: inside the real ellipse when its Mahalanobis radius ≤ n_std / 3.
    assert rows["wide"]["frac_in_real_ellipse"] == pytest.approx(em.coverage_for_n_std(n_std / 3), abs=0.02)
    assert rows["wide"]["ellipse_area"] / rows["real"]["ellipse_area"] == pytest.approx(9.0, rel=0.05)
    assert rows["real"]["ellipse_area"] == pytest.approx(math.pi * n_std**2 * 2.0, rel=0.05)
    assert rows["shifted"]["n"] == 4000


def test_draw_groups_with_ellipses():
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    rng = np.random.default_rng(6)
    fig = Figure()
    ax = fig.subplots()
    groups = {"a": rng.normal(size=(20, 2)), "b": rng.normal(size=(15, 2)) + 4, "pair": rng.normal(size=(2, 2))}
    ellipses = em.draw_groups_with_ellipses(ax, groups, n_std=2.0)
    assert set(ellipses) == {"a", "b"}  # two points get no ellipse
    patches = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(patches) == 4  # outline and fill per ellipse
    outline = patches[0]
    assert outline.width == pytest.approx(2 * ellipses["a"].semi_axes[0])
    assert outline.height == pytest.approx(2 * ellipses["a"].semi_axes[1])
    assert len(ax.get_legend().get_texts()) == 3


def _png_ok(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_evaluate_feature_figure_with_ellipses(tmp_path: Path):
    from medgen.commands.evaluate import save_feature_figure

    rng = np.random.default_rng(7)
    save_feature_figure(rng.normal(size=(12, 64)), rng.normal(loc=0.5, size=(10, 64)), tmp_path / "f.png")
    _png_ok(tmp_path / "f.png")
    save_feature_figure(rng.normal(size=(2, 64)), rng.normal(size=(2, 64)), tmp_path / "tiny.png")  # no ellipses
    _png_ok(tmp_path / "tiny.png")


# ---------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def smoke_work(tmp_path_factory) -> Path:
    """The smoke-scale workspace; shared with the other experiment tests of this session (it is reused by design)."""
    return tmp_path_factory.getbasetemp() / "experiments-smoke-work"


@pytest.mark.slow
def test_embedding_smoke(smoke_work: Path, tmp_path: Path, capsys):
    out = tmp_path / "embedding"
    code = main(["experiment", "embedding", "--scale", "smoke", "--work", str(smoke_work), "--out", str(out),
                 "--no-progress", "--device", "cpu"])
    assert code == 0
    with open(out / "embedding.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["group", "n", "centroid_x", "centroid_y", "ellipse_area", "dist_to_real_sd",
                             "frac_in_real_ellipse"]
    assert [r["group"] for r in rows] == [em.REAL, em.TRAINED, em.UNTRAINED]
    for r in rows:
        assert int(r["n"]) == 6
        values = [float(r[k]) for k in ("centroid_x", "centroid_y", "ellipse_area", "dist_to_real_sd",
                                        "frac_in_real_ellipse")]
        assert all(math.isfinite(v) for v in values)
        assert float(r["ellipse_area"]) > 0 and 0.0 <= float(r["frac_in_real_ellipse"]) <= 1.0
    assert float(rows[0]["dist_to_real_sd"]) == 0.0
    md = (out / "embedding.md").read_text()
    assert "medgen experiment embedding --scale smoke" in md and "Stress-1" in md
    # The canonical command leaves the experiment's own defaults out.
    assert "--coverage" not in md and "--mds" not in md
    _png_ok(out / "embedding.png")

    capsys.readouterr()
    assert main(["experiment", "embedding", "--scale", "smoke", "--work", str(smoke_work), "--out", str(out),
                 "--no-progress", "--coverage", "1.5"]) == 2
    assert "--coverage 1.5" in capsys.readouterr().err
