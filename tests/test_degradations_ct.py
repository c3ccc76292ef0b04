"""The lowdose, noise and drr degradations: the physics they claim, measured on hand-built phantoms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medgen.core.errors import UsageError
from medgen.data.degradations import (
    DEGRADATIONS,
    DRR,
    LOWDOSE,
    NOISE,
    Scan,
    get,
    parse_settings,
    sample_params,
)
from medgen.data.degradations.lowdose import insert_projection_noise

MU_W = 0.0192  # /mm, the documented default

# A uniform water cylinder (radius 20 voxels of 6 mm: 240 mm across) in air, 48×48×8.
N, NZ, SP = 48, 8, 6.0
_XX, _YY = np.mgrid[:N, :N] - (N - 1) / 2
_R = np.hypot(_XX, _YY)
INSIDE = np.repeat((_R < 16)[..., None], NZ, axis=-1)  # well inside the cylinder


def cylinder(hu: float, radius: float = 20.0) -> np.ndarray:
    return np.repeat(np.where(_R < radius, hu, -1000.0)[..., None], NZ, axis=-1)


def lowdose_noise(hu: np.ndarray, seed: int, spacing=(SP, SP, SP), **settings) -> np.ndarray:
    """degraded − clean for one draw."""
    scan = Scan(hu, spacing, "ct")
    out = LOWDOSE.apply(scan, LOWDOSE.params(**settings), np.random.default_rng(seed))["degraded"]
    assert out.shape == hu.shape and np.isfinite(out).all()
    return out - hu


# ---------------------------------------------------------------- registry


def test_registered_with_their_volumes_and_modalities():
    assert get("lowdose") is LOWDOSE and get("noise") is NOISE and get("drr") is DRR
    assert list(DEGRADATIONS)[:5] == ["slices", "kspace", "lowdose", "noise", "drr"]
    assert LOWDOSE.modalities == ("ct",) and DRR.modalities == ("ct",) and NOISE.modalities == ("ct", "mri")
    assert LOWDOSE.volumes == {"degraded": ("intensity", "scan")} == NOISE.volumes
    assert DRR.volumes == {"drr_pa": ("intensity", "as-is"), "drr_lateral": ("intensity", "as-is")}


# ---------------------------------------------------------------- lowdose


def test_lowdose_full_dose_is_the_scan_itself():
    hu = cylinder(40.0)
    out = LOWDOSE.apply(Scan(hu, (SP, SP, SP), "ct"), LOWDOSE.params(dose=1.0), np.random.default_rng(0))
    assert np.array_equal(out["degraded"], hu)
    assert out["degraded"] is not hu
    assert np.array_equal(insert_projection_noise(hu[..., 0], (SP, SP), 1.0, rng=np.random.default_rng(0)), hu[..., 0])


def test_lowdose_variance_follows_dose_and_photons():
    """The added variance is exp(p)(1 − d)/(photons·d): (0.75/0.25)/(0.5/0.5) = 3 between doses 0.25 and 0.5,
    and 4 between 1e5 and 4e5 photons at the same dose."""
    hu = cylinder(0.0)
    quarter = lowdose_noise(hu, 1, dose=0.25, photons=1e5)[INSIDE].var()
    half = lowdose_noise(hu, 2, dose=0.5, photons=1e5)[INSIDE].var()
    brighter = lowdose_noise(hu, 3, dose=0.25, photons=4e5)[INSIDE].var()
    assert quarter / half == pytest.approx(3.0, rel=0.15)
    assert quarter / brighter == pytest.approx(4.0, rel=0.15)
    # Visible but plausible at the defaults: tens of HU through 240 mm of water at a quarter dose.
    assert 15.0 < math.sqrt(quarter) < 60.0


def test_lowdose_noise_has_no_hu_bias_in_water():
    noise = lowdose_noise(cylinder(0.0), 4, dose=0.25)
    inside = noise[INSIDE]
    # The logarithm's bias exp(p)/(2N) is about 0.3 HU here; the mean of ~5000 voxels is known to ~1 HU.
    assert abs(inside.mean()) < 2.0
    assert abs(inside.mean()) < 0.1 * inside.std()


def test_lowdose_noise_is_signal_dependent():
    """Behind a denser object (bone, 1000 HU: twice water's attenuation, e^4.6 ≈ 100× fewer photons through
    its centre) the noise is far larger; image-domain noise would be the same in both."""
    water = lowdose_noise(cylinder(0.0), 5, dose=0.25)[INSIDE].std()
    bone = lowdose_noise(cylinder(1000.0), 5, dose=0.25)[INSIDE].std()
    assert bone > 4 * water
    # The same water region (the central 8 voxels) behind a short path (a 96 mm cylinder) and a long one (264 mm).
    centre = np.repeat((_R < 4)[..., None], NZ, axis=-1)
    short = lowdose_noise(cylinder(0.0, radius=8.0), 6, dose=0.25)[centre].std()
    long = lowdose_noise(cylinder(0.0, radius=22.0), 6, dose=0.25)[centre].std()
    assert long > 3 * short


def test_lowdose_noise_lands_where_the_attenuation_is_on_a_non_square_slice():
    """A bone disc off-centre in a 40×28 slice: the noise it causes is inside it, not at the mirrored spot."""
    xx, yy = np.mgrid[:40, :28]
    disc = np.hypot(xx - 9, yy - 13.5) < 5
    mirror = np.hypot(xx - 30, yy - 13.5) < 5
    hu = np.where(disc, 1500.0, -1000.0)[..., None].repeat(4, axis=-1)
    noise = lowdose_noise(hu, 7, spacing=(8.0, 8.0, 8.0), dose=0.1)
    assert noise.shape == (40, 28, 4)
    assert noise[disc].std() > 2 * noise[mirror].std()


def test_lowdose_pixel_size_and_mu_water_enter_as_their_product():
    """Halving μ_water and doubling the pixel keeps every line integral, so the same draw gives the same HU
    noise: checks the division by the pixel size and by μ_water/1000 in the reconstruction."""
    hu = cylinder(0.0)[..., :2]
    a = lowdose_noise(hu, 8, spacing=(SP, SP, SP), dose=0.3, mu_water=MU_W)
    b = lowdose_noise(hu, 8, spacing=(2 * SP, 2 * SP, SP), dose=0.3, mu_water=MU_W / 2)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6)
    assert a.std() > 5.0


def test_lowdose_reproducible_from_the_generator():
    hu = cylinder(0.0)[..., :2]
    np.testing.assert_array_equal(lowdose_noise(hu, 11), lowdose_noise(hu, 11))
    assert np.abs(lowdose_noise(hu, 11) - lowdose_noise(hu, 12)).max() > 1.0


def test_lowdose_views_change_the_noise():
    """More views at the same photons per view is more dose: less noise (variance ∝ 1/views)."""
    hu = cylinder(0.0)
    few = lowdose_noise(hu, 13, views=40)[INSIDE].var()
    many = lowdose_noise(hu, 14, views=160)[INSIDE].var()
    assert few / many == pytest.approx(4.0, rel=0.2)


# ---------------------------------------------------------------- noise


def test_gaussian_noise_has_the_asked_std_in_scan_units():
    values = np.full((32, 32, 32), 40.0)
    out = NOISE.apply(Scan(values, (1.0, 1.0, 1.0), "ct"), NOISE.params(sigma=25.0), np.random.default_rng(0))
    noise = out["degraded"] - values
    assert noise.std() == pytest.approx(25.0, rel=0.02)
    assert abs(noise.mean()) < 0.5
    # sigma = 0: the modality's default, 30 HU for CT and 0.03 for MRI.
    ct = NOISE.apply(Scan(values, (1.0, 1.0, 1.0), "ct"), NOISE.params(), np.random.default_rng(1))["degraded"]
    assert (ct - values).std() == pytest.approx(30.0, rel=0.02)
    mri = NOISE.apply(Scan(values * 0 + 0.5, (1.0, 1.0, 1.0), "mri"), NOISE.params(), np.random.default_rng(1))
    assert (mri["degraded"] - 0.5).std() == pytest.approx(0.03, rel=0.02)


def test_rician_noise_on_zero_signal_is_rayleigh():
    zero = Scan(np.zeros((32, 32, 32)), (1.0, 1.0, 1.0), "mri")
    out = NOISE.apply(zero, NOISE.params(sigma=0.05, rician=True), np.random.default_rng(0))["degraded"]
    assert (out >= 0).all()
    assert out.mean() == pytest.approx(0.05 * math.sqrt(math.pi / 2), rel=0.02)
    assert (out**2).mean() == pytest.approx(2 * 0.05**2, rel=0.03)  # E[M²] = A² + 2σ²
    bright = Scan(np.full((32, 32, 32), 0.8), (1.0, 1.0, 1.0), "mri")
    out = NOISE.apply(bright, NOISE.params(sigma=0.05, rician=True), np.random.default_rng(0))["degraded"]
    assert (out**2).mean() == pytest.approx(0.8**2 + 2 * 0.05**2, rel=0.01)
    assert out.std() == pytest.approx(0.05, rel=0.05)  # nearly Gaussian at high SNR


def test_noise_reproducible_and_rician_refused_for_ct():
    scan = Scan(np.zeros((8, 8, 8)), (1.0, 1.0, 1.0), "ct")
    a = NOISE.apply(scan, NOISE.params(sigma=10.0), np.random.default_rng(3))["degraded"]
    b = NOISE.apply(scan, NOISE.params(sigma=10.0), np.random.default_rng(3))["degraded"]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(UsageError, match="^noise: rician"):
        NOISE.apply(scan, NOISE.params(rician=True), np.random.default_rng(0))


# ---------------------------------------------------------------- drr


def box_scan(h: float, spacing: tuple[float, float, float]) -> tuple[Scan, tuple[slice, slice, slice]]:
    """A 3 × 5 × 4-voxel box of ``h`` HU, off-centre in 16³ air (−1000 HU, and one −1024 voxel)."""
    hu = np.full((16, 16, 16), -1000.0)
    hu[0, 0, 0] = -1024.0
    box = (slice(2, 5), slice(6, 11), slice(9, 13))
    hu[box] = h
    return Scan(hu, spacing, "ct"), box


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.5, 3.0, 5.0)])
def test_drr_line_integrals_of_a_box(spacing):
    h = 500.0
    scan, (bx, by, bz) = box_scan(h, spacing)
    out = DRR.apply(scan, DRR.params(), np.random.default_rng(0))
    pa, lateral = out["drr_pa"], out["drr_lateral"]
    assert pa.shape == lateral.shape == (16, 16, 16)
    mu = MU_W * 1.5  # 500 HU
    # PA rays run along y: 5 voxels of the box, each spacing[1] long; lateral rays along x: 3 voxels of spacing[0].
    assert pa[3, 0, 10] == pytest.approx(5 * spacing[1] * mu)
    assert lateral[0, 8, 10] == pytest.approx(3 * spacing[0] * mu)
    # Rays that miss the box see only air: 0 (−1024 HU too).
    assert pa[3, 0, 5] == 0.0 and pa[8, 0, 10] == 0.0 and pa[0, 0, 0] == 0.0
    assert lateral[0, 2, 10] == 0.0 and lateral[0, 8, 14] == 0.0
    # Each radiograph is constant along its ray axis, and its footprint is the box's shadow.
    assert np.array_equal(pa, np.broadcast_to(pa[:, :1, :], pa.shape))
    assert np.array_equal(lateral, np.broadcast_to(lateral[:1, :, :], lateral.shape))
    shadow_pa = np.zeros((16, 16), bool)
    shadow_pa[bx, bz] = True
    assert np.array_equal(pa[:, 0, :] > 0, shadow_pa)
    shadow_lat = np.zeros((16, 16), bool)
    shadow_lat[by, bz] = True
    assert np.array_equal(lateral[0] > 0, shadow_lat)


def test_drr_transmission_and_mu_water():
    scan, _ = box_scan(0.0, (2.0, 2.0, 2.0))
    integral = DRR.apply(scan, DRR.params(), np.random.default_rng(0))
    trans = DRR.apply(scan, DRR.params(transmission=True), np.random.default_rng(0))
    for name in ("drr_pa", "drr_lateral"):
        np.testing.assert_allclose(trans[name], np.exp(-integral[name]))
    assert trans["drr_pa"][3, 7, 10] == pytest.approx(math.exp(-5 * 2.0 * MU_W))
    assert trans["drr_pa"][8, 7, 10] == 1.0
    doubled = DRR.apply(scan, DRR.params(mu_water=2 * MU_W), np.random.default_rng(0))
    np.testing.assert_allclose(doubled["drr_lateral"], 2 * integral["drr_lateral"])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "degradation, settings",
    [
        (LOWDOSE, {"dose": 0.0}),
        (LOWDOSE, {"dose": 1.5}),
        (LOWDOSE, {"dose": float("nan")}),
        (LOWDOSE, {"photons": 0.0}),
        (LOWDOSE, {"photons": float("inf")}),
        (LOWDOSE, {"views": 1}),
        (LOWDOSE, {"views": -3}),
        (LOWDOSE, {"mu_water": -0.02}),
        (NOISE, {"sigma": -1.0}),
        (NOISE, {"sigma": float("nan")}),
        (DRR, {"mu_water": 0.0}),
    ],
)
def test_bad_parameters_name_the_degradation(degradation, settings):
    with pytest.raises(UsageError, match=f"^{degradation.name}: {next(iter(settings))}="):
        degradation.params(**settings)


def test_bad_settings_through_the_command_line_path():
    settings = parse_settings(LOWDOSE, ["dose=0:0"])
    with pytest.raises(UsageError, match="^lowdose: dose=0"):
        sample_params(LOWDOSE, settings, np.random.default_rng(0))
    drawn = sample_params(LOWDOSE, parse_settings(LOWDOSE, ["dose=0.1:0.5", "views=30"]), np.random.default_rng(0))
    assert 0.1 <= drawn.dose <= 0.5 and drawn.views == 30


def test_lowdose_refuses_non_square_axial_pixels():
    scan = Scan(cylinder(0.0)[..., :1], (6.0, 8.0, 6.0), "ct")
    with pytest.raises(UsageError, match="^lowdose: axial pixels 6 × 8 mm"):
        LOWDOSE.apply(scan, LOWDOSE.params(), np.random.default_rng(0))
    # Within 5 % (the rounding of preprocessing's fit) they are taken as squares of side √(dx·dy).
    ok = Scan(cylinder(0.0)[..., :1], (6.0, 6.2, 6.0), "ct")
    assert LOWDOSE.apply(ok, LOWDOSE.params(), np.random.default_rng(0))["degraded"].shape == (N, N, 1)
