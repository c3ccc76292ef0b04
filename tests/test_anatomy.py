"""CT anatomy protocol and MRI tissue fractions on volumes of known geometry."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from medgen.metrics.anatomy import (
    compare_distributions,
    correlations,
    ct_anatomy,
    missed_profile,
    mri_tissue_fractions,
    save_anatomy_histograms,
)

SHAPE = (48, 48, 40)
SPACING = (1.5, 2.0, 2.5)  # mm, anisotropic on purpose
VOXEL_ML = 1.5 * 2.0 * 2.5 / 1000


def ellipsoid(centre, radii, shape=SHAPE):
    """Voxels whose centres lie inside an ellipsoid (centre, semi-axes in voxels)."""
    g = np.indices(shape, dtype=np.float64)
    return sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0


def cylinder_z(centre_xy, radius, z_range, shape=SHAPE):
    """Voxels of a cylinder along z (axis at centre_xy, radius in voxels, z in [z0, z1))."""
    x, y, z = np.indices(shape, dtype=np.float64)
    return ((x - centre_xy[0]) ** 2 + (y - centre_xy[1]) ** 2 <= radius**2) & (z >= z_range[0]) & (z < z_range[1])


def thorax(n_emphysema: int, seed: int = 0, trachea: bool = False):
    """Synthetic thorax CT: body (+40 HU) with a fat layer (-100 HU), two lungs
    (-850 HU, ``n_emphysema`` voxels at -980 HU), a spine (+700 HU) and a table
    (+200 HU, outside the body), in air (-1000 HU), plus 5 HU noise.
    With ``trachea``, the body is an elliptic cylinder spanning all slices and a
    -1000 HU tube runs from the top face into the left lung."""
    rng = np.random.default_rng(seed)
    if trachea:
        x, y, _ = np.indices(SHAPE, dtype=np.float64)
        body = ((x - 24) / 21) ** 2 + ((y - 24) / 16) ** 2 <= 1.0
        inner = ((x - 24) / 19) ** 2 + ((y - 24) / 14) ** 2 <= 1.0
    else:
        body = ellipsoid((24, 24, 20), (21, 16, 18))
        inner = ellipsoid((24, 24, 20), (19, 14, 16))
    lungs = ellipsoid((15, 26, 20), (6, 8, 12)) | ellipsoid((33, 26, 20), (6, 8, 12))
    spine = cylinder_z((24, 14.5), 2.5, (12, 28))
    table = np.zeros(SHAPE, dtype=bool)
    table[4:44, 1:3, :] = True
    assert not (lungs & ~inner).any() and not (spine & ~inner).any() and not (lungs & spine).any()
    assert not (table & body).any()

    hu = np.full(SHAPE, -1000.0)
    hu[body] = -100.0
    hu[inner] = 40.0
    hu[lungs] = -850.0
    hu[spine] = 700.0
    hu[table] = 200.0
    airway = np.zeros(SHAPE, dtype=bool)
    if trachea:
        airway = cylinder_z((15, 26), 1.5, (30, SHAPE[2])) & ~lungs
        hu[airway] = -1000.0
    # emphysema voxels in the lower half of the lungs, away from the airway
    lung_idx = np.flatnonzero(lungs & (np.indices(SHAPE)[2] < 18))
    emph = rng.choice(lung_idx, size=n_emphysema, replace=False)
    hu.ravel()[emph] = -980.0
    hu += rng.normal(0.0, 5.0, SHAPE)
    truth = {
        "body": int(body.sum()), "fat": int((body & ~inner).sum()), "lung": int(lungs.sum()),
        "bone": int(spine.sum()), "table": int(table.sum()), "airway": int(airway.sum()),
        "emph": n_emphysema,
    }
    return hu.astype(np.float32), truth


def test_ct_anatomy_recovers_constructed_geometry():
    hu, t = thorax(n_emphysema=57)
    a = ct_anatomy(hu, SPACING)
    # masks are built voxel by voxel, so the counts are exact
    assert a["body_volume_ml"] == pytest.approx(t["body"] * VOXEL_ML)
    assert a["lung_volume_ml"] == pytest.approx(t["lung"] * VOXEL_ML)
    assert a["bone_volume_ml"] == pytest.approx(t["bone"] * VOXEL_ML)
    assert a["lung_fraction"] == pytest.approx(t["lung"] / t["body"])
    assert a["bone_fraction"] == pytest.approx(t["bone"] / t["body"])
    assert a["fat_fraction"] == pytest.approx(t["fat"] / t["body"])
    assert a["soft_tissue_fraction"] == pytest.approx((t["body"] - t["fat"] - t["lung"] - t["bone"]) / t["body"])
    assert a["emphysema_pct"] == pytest.approx(100.0 * 57 / t["lung"])
    n = hu.size
    assert a["air_fraction"] == pytest.approx((n - t["body"] - t["table"]) / n)
    assert a["airway_volume_ml"] == 0.0
    # lung height: the constructed lungs' slices with more than 500 mm² of lung (1.5 × 2 mm pixels), times 2.5 mm
    lungs = ellipsoid((15, 26, 20), (6, 8, 12)) | ellipsoid((33, 26, 20), (6, 8, 12))
    area = lungs.sum(axis=(0, 1)) * 1.5 * 2.0
    slices = np.flatnonzero(area > 500.0)
    assert 8 < slices[0] and slices[-1] < 32  # the tips (z = 8 and 32: 6 mm², one voxel each) are left out
    assert a["lung_height_mm"] == pytest.approx((slices[-1] - slices[0] + 1) * 2.5)
    assert math.isnan(ct_anatomy(np.full(SHAPE, 40.0, dtype=np.float32), SPACING)["lung_height_mm"])  # no lung
    # and the analytic volumes of the shapes, within a few percent (voxelisation)
    ell = lambda r: 4 / 3 * math.pi * r[0] * r[1] * r[2] * VOXEL_ML  # noqa: E731
    assert a["body_volume_ml"] == pytest.approx(ell((21, 16, 18)), rel=0.03)
    assert a["lung_volume_ml"] == pytest.approx(2 * ell((6, 8, 12)), rel=0.03)


def test_trachea_reaching_the_top_is_not_lung():
    hu, t = thorax(n_emphysema=40, trachea=True)
    a = ct_anatomy(hu, SPACING)
    assert a["airway_volume_ml"] == pytest.approx(t["airway"] * VOXEL_ML)
    assert a["lung_volume_ml"] == pytest.approx(t["lung"] * VOXEL_ML)
    assert a["emphysema_pct"] == pytest.approx(100.0 * 40 / t["lung"])
    # body spans every slice, so the lungs are no 3D hole: slice-wise filling must hold them
    assert a["body_volume_ml"] == pytest.approx(t["body"] * VOXEL_ML)
    # without airway exclusion the trachea counts as (emphysematous) lung
    b = ct_anatomy(hu, SPACING, exclude_airway=False)
    assert b["lung_volume_ml"] == pytest.approx((t["lung"] + t["airway"]) * VOXEL_ML)
    # ... but not as lung height: its cross-section (a few voxels of 3 mm²) is under the 500 mm² floor,
    # which is what keeps a trachea the airway rule misses (coarse voxels) from lengthening the lungs
    airway_area = (cylinder_z((15, 26), 1.5, (30, SHAPE[2])).sum(axis=(0, 1)) * 3.0).max()
    assert 0 < airway_area < 500
    assert b["lung_height_mm"] == a["lung_height_mm"] < (SHAPE[2] - 8) * 2.5
    assert b["emphysema_pct"] == pytest.approx(100.0 * (40 + t["airway"]) / (t["lung"] + t["airway"]))


def test_empty_lung_gives_nan_emphysema():
    hu = np.full((16, 16, 16), -1000.0)
    hu[4:12, 4:12, 4:12] = 40.0
    a = ct_anatomy(hu, (1.0, 1.0, 1.0))
    assert a["body_volume_ml"] == pytest.approx(512 / 1000)
    assert a["lung_volume_ml"] == 0.0 and math.isnan(a["emphysema_pct"])


def test_ct_anatomy_on_generated_phantoms():
    phantoms = pytest.importorskip("medgen.data.phantoms")
    if not hasattr(phantoms, "generate"):
        pytest.skip("phantom generator not available")
    from scipy import ndimage

    for seed in range(3):
        ph = phantoms.generate("thorax-ct", 48, seed)
        hu = np.asarray(ph.array, dtype=np.float32)
        a = ct_anatomy(hu, tuple(ph.spacing))
        f = ph.factors
        # lung: the phantom's lung mask excludes the airway; at 8 mm voxels the
        # trachea lumen is partial-volumed above -950 HU, so it stays in ours (~1 %)
        assert a["lung_volume_ml"] == pytest.approx(f["lung_volume_ml"], rel=0.03), (seed, a, f)
        assert a["emphysema_pct"] == pytest.approx(f["emphysema_pct"], abs=0.5), (seed, a, f)
        # bone: the phantom counts > +300 HU voxels inside its bone mask only, but its
        # partial-volume blur pushes cortical bone above +300 HU one voxel beyond the
        # mask. Every bone voxel we count must be true bone or that one-voxel rim.
        rim = ndimage.binary_dilation(ph.masks["bone"]) & (hu > 300)
        voxel_ml = float(np.prod(ph.spacing)) / 1000
        assert a["bone_volume_ml"] == pytest.approx(rim.sum() * voxel_ml), (seed, a, f)
        assert a["bone_volume_ml"] >= f["bone_volume_ml"] - 1e-6


def test_mri_tissue_fractions_on_three_compartments():
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    brain = ellipsoid((20, 20, 20), (17, 15, 16), shape)
    wm = ellipsoid((20, 20, 20), (11, 9, 10), shape)
    csf = ellipsoid((20, 20, 20), (4, 3, 4), shape)  # "ventricles", inside WM
    v = np.full(shape, -1.0)
    v[brain] = 0.1  # GM
    v[wm] = 0.7
    v[csf] = -0.5
    v[brain] += rng.normal(0, 0.02, int(brain.sum()))  # classes stay > 4 sigma apart
    n = brain.sum()
    expected = {
        "csf_fraction": csf.sum() / n,
        "gm_fraction": (brain & ~wm).sum() / n,
        "wm_fraction": (wm & ~csf).sum() / n,
    }
    out = mri_tissue_fractions(v)
    for k, val in expected.items():
        assert out[k] == pytest.approx(val, abs=1e-9)
    assert out["foreground_fraction"] == pytest.approx(n / v.size)
    # T2: the same anatomy with inverted contrast
    t2 = mri_tissue_fractions(-v, mask=brain, contrast="T2")
    for k, val in expected.items():
        assert t2[k] == pytest.approx(val, abs=1e-9)


def test_compare_distributions_wasserstein():
    rng = np.random.default_rng(1)
    real = [{"lung_fraction": float(x), "bone_volume_ml": float(y)} for x, y in rng.normal(size=(30, 2))]
    same = compare_distributions(real, real)
    assert all(s["wasserstein1"] == pytest.approx(0.0, abs=1e-12) for s in same.values())
    shifted = [{k: v + 0.25 for k, v in d.items()} for d in real]
    cmp = compare_distributions(real, shifted)
    for key in ("lung_fraction", "bone_volume_ml"):
        r = np.array([d[key] for d in real])
        assert cmp[key]["wasserstein1"] == pytest.approx(0.25)
        assert cmp[key]["fake_mean"] - cmp[key]["real_mean"] == pytest.approx(0.25)
        assert cmp[key]["real_std"] == pytest.approx(r.std())
        assert (cmp[key]["n_real"], cmp[key]["n_fake"]) == (30, 30)
    # NaN values (e.g. emphysema of a lung-less volume) are left out, not propagated
    with_nan = shifted + [{"lung_fraction": math.nan, "bone_volume_ml": math.nan}]
    assert compare_distributions(real, with_nan)["lung_fraction"]["wasserstein1"] == pytest.approx(0.25)
    assert compare_distributions(real, with_nan)["lung_fraction"]["n_fake"] == 30


def test_missed_profile_compares_the_missed_with_the_reached_real_volumes():
    # Six real volumes; the generated set reaches the three with small lungs. Means and spread by hand.
    lung = [0.15, 0.16, 0.17, 0.22, 0.24, 0.26]
    real = [{"lung_fraction": x, "bone_fraction": 0.04, "emphysema_pct": e}
            for x, e in zip(lung, [5.0, math.nan, 7.0, 20.0, 30.0, 40.0])]
    reached = np.array([True, True, True, False, False, False])
    p = missed_profile(real, reached)
    lf = p["lung_fraction"]
    sd = math.sqrt(sum((x - sum(lung) / 6) ** 2 for x in lung) / 6)  # population SD of all six
    assert lf["missed_mean"] == pytest.approx(0.24) and lf["reached_mean"] == pytest.approx(0.16)
    assert lf["real_std"] == pytest.approx(sd)
    assert lf["standardized"] == pytest.approx(0.08 / sd) and lf["standardized"] > 1  # the large lungs are missed
    assert (lf["n_missed"], lf["n_reached"]) == (3, 3)
    e = p["emphysema_pct"]  # NaN left out: 2 reached values
    assert e["reached_mean"] == pytest.approx(6.0) and e["missed_mean"] == pytest.approx(30.0)
    assert e["real_std"] == pytest.approx(np.std([5.0, 7.0, 20.0, 30.0, 40.0]))
    assert (e["n_missed"], e["n_reached"]) == (3, 2)
    assert math.isnan(p["bone_fraction"]["standardized"])  # constant: no spread to measure in
    everything = missed_profile(real, np.ones(6, bool))["lung_fraction"]
    assert everything["n_missed"] == 0 and math.isnan(everything["missed_mean"]) and math.isnan(everything["standardized"])
    with pytest.raises(ValueError, match="each of the 6 real volumes"):
        missed_profile(real, reached[:5])


def test_correlations_match_scipy_and_tell_a_coupled_generator_from_the_real_dependence():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(3)
    body = rng.normal(20000, 3000, 40)
    real = [{"body_volume_ml": b, "lung_volume_ml": 0.2 * b + rng.normal(0, 700)} for b in body]
    fake = [{"body_volume_ml": b, "lung_volume_ml": 0.2 * b} for b in body]  # lungs scale with the body
    fake.append({"body_volume_ml": 1.0, "lung_volume_ml": math.nan})  # left out
    c = correlations(real, fake, [("body_volume_ml", "lung_volume_ml"), ("body_volume_ml", "missing")])
    assert list(c) == ["body_volume_ml~lung_volume_ml"]  # a statistic that is absent: no entry
    r = c["body_volume_ml~lung_volume_ml"]
    expected = pearsonr(body, [d["lung_volume_ml"] for d in real]).statistic
    assert r["real"] == pytest.approx(expected, abs=1e-12) and 0.4 < r["real"] < 0.9
    assert r["fake"] == pytest.approx(1.0) and (r["n_real"], r["n_fake"]) == (40, 40)
    constant = [{"body_volume_ml": 1.0, "lung_volume_ml": float(i)} for i in range(5)]
    assert math.isnan(correlations(constant, constant, [("body_volume_ml", "lung_volume_ml")])
                      ["body_volume_ml~lung_volume_ml"]["real"])
    no_lungs = [{"body_volume_ml": 1.0, "lung_volume_ml": math.nan} for _ in range(5)]  # e.g. an untrained model
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN without NumPy's "Mean of empty slice"
        c = correlations(real, no_lungs, [("body_volume_ml", "lung_volume_ml")])["body_volume_ml~lung_volume_ml"]
    assert math.isnan(c["fake"]) and c["real"] == pytest.approx(expected, abs=1e-12)


def test_histogram_figure_plots_comparable_statistics(tmp_path):
    import matplotlib.image

    real = [{"a": float(i), "b": 2.0 * i, "c": math.nan} for i in range(10)]
    fake = [{"a": i + 0.5, "b": 2.0 * i, "c": math.nan} for i in range(8)]
    path = tmp_path / "hist.png"
    plotted = save_anatomy_histograms(real, fake, path, dpi=50)
    assert plotted == ["a", "b"]  # "c" has no finite values
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (int(2.6 * 50), int(2 * 3.2 * 50))  # one row of two panels
    assert [p.name for p in tmp_path.iterdir()] == ["hist.png"]  # no temporary file left


def test_sampling_reference_matches_the_exact_distribution_of_real_vs_real_w1():
    from itertools import combinations

    from medgen.metrics.anatomy import sampling_reference

    rng = np.random.default_rng(3)
    real = [{"x": float(v)} for v in rng.normal(size=4)]
    pool = rng.normal(loc=0.5, size=9)
    reference = [{"x": float(v), "nan_only": math.nan} for v in pool]
    # Independent computation: every 4-subset of the pool is equally likely; for two samples of
    # equal size W1 is the mean absolute difference of the sorted values.
    r = np.sort([d["x"] for d in real])
    exact = np.array([np.abs(np.sort(pool[list(c)]) - r).mean() for c in combinations(range(9), 4)])
    out = sampling_reference(real, reference, 4, repeats=4000, seed=0)
    assert set(out) == {"x"}  # a statistic without finite values has no reference
    ref = out["x"]
    assert (ref["n"], ref["repeats"]) == (4, 4000)
    spread = np.percentile(exact, 90) - np.percentile(exact, 10)
    assert ref["median"] == pytest.approx(np.median(exact), abs=0.05 * spread)
    assert ref["p10"] == pytest.approx(np.percentile(exact, 10), abs=0.05 * spread)
    assert ref["p90"] == pytest.approx(np.percentile(exact, 90), abs=0.05 * spread)
    assert ref["std"] == pytest.approx(exact.std(), rel=0.1)
    # More generated volumes than reference ones: one draw, the whole reference set.
    whole = sampling_reference(real, reference, 50, repeats=100)["x"]
    assert (whole["n"], whole["repeats"], whole["std"]) == (9, 1, 0.0)
    assert whole["median"] == pytest.approx(compare_distributions(real, reference)["x"]["wasserstein1"])
    with pytest.raises(ValueError, match="n must be >= 1"):
        sampling_reference(real, reference, 0)
