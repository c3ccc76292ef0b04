"""Degradations: MRI artefacts (motion, bias field, ghosting) and masked inputs (inpainting, outpainting),
against values computed here independently."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from scipy import ndimage

from medgen.core.errors import UsageError
from medgen.data import degradations
from medgen.data.degradations import BIAS, GHOSTING, INPAINT, MOTION, OUTPAINT, Scan
from medgen.data.degradations.bias import draw_coefficients
from medgen.data.degradations.motion import draw_movements

#: The MRI artefacts run TorchIO (imported when applied, so the package imports without it).
needs_torchio = pytest.mark.skipif(importlib.util.find_spec("torchio") is None, reason="TorchIO is not installed")


def smooth_volume(shape, lo, hi, seed=0, sigma=2.0) -> np.ndarray:
    """Smooth random values spanning [lo, hi]."""
    v = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma, mode="wrap")
    v = (v - v.min()) / (v.max() - v.min())
    return lo + (hi - lo) * v


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def body_scan(modality="ct", shape=(32, 28, 20), spacing=(1.0, 1.5, 2.0), centre=None, radii=None) -> Scan:
    """An ellipsoidal body in air (CT: -1000 HU, tissue -100..300 HU) or background (MRI: 0.02, tissue 0.3..0.8)."""
    centre = centre if centre is not None else [(n - 1) / 2 for n in shape]
    radii = radii if radii is not None else [n * 0.4 for n in shape]
    body = ellipsoid(shape, centre, radii)
    if modality == "ct":
        values = np.where(body, smooth_volume(shape, -100.0, 300.0), -1000.0)
    else:
        values = np.where(body, smooth_volume(shape, 0.3, 0.8), 0.02)
    return Scan(values, spacing, modality)


def centred_kspace(values: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fftn(values))


# ----------------------------------------------------------------------------- registry and parameters


def test_the_five_are_registered_after_the_others_with_their_volumes():
    names = list(degradations.DEGRADATIONS)
    assert names[-5:] == ["motion", "bias", "ghosting", "inpaint", "outpaint"]
    for d in (MOTION, BIAS, GHOSTING):
        assert d.modalities == ("mri",) and d.volumes == {"degraded": ("intensity", "scan")}
    for d in (INPAINT, OUTPAINT):
        assert d.modalities == ("ct", "mri")
        assert d.volumes == {"degraded": ("intensity", "scan"), "mask": ("label", "as-is")}
    for name in ("MOTION", "BIAS", "GHOSTING", "INPAINT", "OUTPAINT"):
        assert name in degradations.__all__


@pytest.mark.parametrize("degradation, settings, message", [
    (MOTION, {"degrees": -1.0}, "motion: degrees=-1.0"),
    (MOTION, {"translation": float("nan")}, "motion: translation=nan"),
    (MOTION, {"num_transforms": 0}, "motion: num_transforms=0"),
    (MOTION, {"interpolation": "cubic"}, "motion: interpolation='cubic'"),
    (BIAS, {"coefficients": -0.1}, "bias: coefficients=-0.1"),
    (BIAS, {"order": -1}, "bias: order=-1"),
    (GHOSTING, {"num_ghosts": -2}, "ghosting: num_ghosts=-2"),
    (GHOSTING, {"axis": "w"}, "ghosting: axis='w'"),
    (GHOSTING, {"intensity": -0.5}, "ghosting: intensity=-0.5"),
    (GHOSTING, {"restore": 1.5}, "ghosting: restore=1.5"),
    (INPAINT, {"shape": "sphere"}, "inpaint: shape='sphere'"),
    (INPAINT, {"size_mm": 0.0}, "inpaint: size_mm=0.0"),
    (INPAINT, {"fraction": 1.0}, "inpaint: fraction=1.0"),
    (INPAINT, {"fill": "median"}, "inpaint: fill='median'"),
    (INPAINT, {"fill_value": float("inf")}, "inpaint: fill_value=inf"),
    (OUTPAINT, {"fov_mm": -5.0}, "outpaint: fov_mm=-5.0"),
    (OUTPAINT, {"centre": "table"}, "outpaint: centre='table'"),
    (OUTPAINT, {"z_fraction": 0.0}, "outpaint: z_fraction=0.0"),
])
def test_invalid_parameters_are_refused_naming_the_degradation(degradation, settings, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
        degradation.params(**settings)
    # and through the command line's parsing, from strings
    parsed = degradations.parse_settings(degradation, {k: str(v) for k, v in settings.items()})
    with pytest.raises(UsageError, match="^" + degradation.name):
        degradations.sample_params(degradation, parsed, np.random.default_rng(0))


@pytest.mark.parametrize("degradation, settings, modality", [
    pytest.param(MOTION, {"degrees": 5.0, "translation": 3.0}, "mri", marks=needs_torchio),
    pytest.param(BIAS, {"coefficients": 0.3}, "mri", marks=needs_torchio),
    pytest.param(GHOSTING, {}, "mri", marks=needs_torchio),
    (INPAINT, {"shape": "box", "size_mm": 6.0}, "ct"),
    (INPAINT, {"shape": "blobs", "size_mm": 6.0}, "mri"),
    (OUTPAINT, {"fov_mm": 10.0, "z_fraction": 0.5}, "ct"),
])
def test_every_degradation_is_deterministic_for_a_seed(degradation, settings, modality):
    scan = body_scan(modality, shape=(16, 16, 16), spacing=(1.0, 1.0, 1.5))
    params = degradation.params(**settings)
    first = degradation.apply(scan, params, np.random.default_rng(5))
    again = degradation.apply(scan, params, np.random.default_rng(5))
    assert first.keys() == again.keys() == degradation.volumes.keys()
    for name in first:
        assert first[name].shape == scan.values.shape
        np.testing.assert_array_equal(first[name], again[name])
    if degradation in (MOTION, BIAS, INPAINT):  # these draw from the generator: another seed, another pair
        other = degradation.apply(scan, params, np.random.default_rng(6))
        assert not np.array_equal(first["degraded"], other["degraded"])


# ----------------------------------------------------------------------------- motion


@needs_torchio
def test_motion_without_movement_is_the_identity():
    values = smooth_volume((16, 16, 12), 0.1, 0.9)
    scan = Scan(values, (1.0, 1.2, 2.0), "mri")
    out = MOTION.apply(scan, MOTION.params(degrees=0.0, translation=0.0, num_transforms=3), np.random.default_rng(0))
    np.testing.assert_allclose(out["degraded"], values, atol=1e-6)


@needs_torchio
def test_motion_mixes_k_space_segments_keeping_the_centre_from_the_unmoved_scan():
    shape = (20, 20, 20)
    values = smooth_volume(shape, 0.3, 0.7, sigma=3.0)  # no background: the output is not clipped
    scan = Scan(values, (1.0, 1.0, 1.5), "mri")
    params = MOTION.params(degrees=8.0, translation=4.0, num_transforms=2)
    out = MOTION.apply(scan, params, np.random.default_rng(3))["degraded"]
    assert 0 < out.min() and out.max() < 1  # nothing clipped, so k-space can be compared exactly
    assert np.abs(out - values).max() > 0.02
    assert abs(out.mean() - values.mean()) < 1e-4  # the centre of k-space (and the DC) is the unmoved scan's

    times, _, _ = draw_movements(params, np.random.default_rng(3))
    depth = shape[2]
    bounds = [0, *(int(depth * t) for t in times), depth]  # k-space segments along z, in acquisition order
    centre = int(np.argmax(times > 0.5)) if (times > 0.5).any() else len(times)
    k_out, k_clean = centred_kspace(out), centred_kspace(values)
    scale = np.abs(k_clean).max()
    mirror = (depth - np.arange(depth)) % depth  # plane of -k_z in the centred spectrum
    lo, hi = bounds[centre], bounds[centre + 1]
    # The real part of the inverse transform makes k-space Hermitian, (F(k) + F*(-k)) / 2: the unmoved scan's
    # k-space is kept exactly where both k_z and -k_z lie in the central segment.
    exact = [z for z in range(lo, hi) if lo <= mirror[z] < hi]
    assert len(exact) >= 3
    assert np.abs(k_out[..., exact] - k_clean[..., exact]).max() / scale < 1e-5
    for segment in range(len(bounds) - 1):
        planes = [z for z in range(bounds[segment], bounds[segment + 1]) if not lo <= mirror[z] < hi]
        if segment != centre and planes:  # from moved scans: a mixture, not the clean k-space
            assert np.abs(k_out[..., planes] - k_clean[..., planes]).max() / scale > 1e-3, segment


@needs_torchio
def test_motion_translation_is_in_mm_and_the_early_segment_comes_from_the_moved_scan(monkeypatch):
    import medgen.data.degradations.motion as motion

    shape, spacing = (12, 10, 20), (1.0, 1.5, 2.5)
    values = np.zeros(shape)
    values[3:9, 2:8, 6:14] = smooth_volume((6, 6, 8), 0.2, 0.8)
    # one movement of +5 mm along z (2 slices of 2.5 mm) after 30 % of the acquisition
    monkeypatch.setattr(motion, "draw_movements", lambda params, rng: (np.array([0.3]), np.zeros((1, 3)),
                                                                       np.array([[0.0, 0.0, 5.0]])))
    out = MOTION.apply(Scan(values, spacing, "mri"), MOTION.params(), np.random.default_rng(0))["degraded"]
    # The resampling transform maps the output grid onto the input's, so the content moves by -5 mm. The unmoved
    # scan fills the segment holding the k-space centre (planes 6..19); the moved one the other (planes 0..5).
    moved = np.roll(values, -2, axis=2)  # the object stays clear of the border: a roll is the exact shift
    kspace = centred_kspace(values)
    kspace[..., :6] = centred_kspace(moved)[..., :6]
    expected = np.clip(np.fft.ifftn(np.fft.ifftshift(kspace)).real, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.abs(out - values).max() > 0.05


def test_motion_draws_movements_and_times_like_random_motion():
    params = MOTION.params(degrees=7.0, translation=3.0, num_transforms=4)
    draws = [draw_movements(params, np.random.default_rng(s)) for s in range(200)]
    times = np.stack([d[0] for d in draws])
    degrees = np.stack([d[1] for d in draws])
    translation = np.stack([d[2] for d in draws])
    assert degrees.shape == (200, 4, 3) and np.abs(degrees).max() <= 7 and np.abs(degrees).max() > 6.5
    assert np.abs(translation).max() <= 3 and np.abs(translation).max() > 2.8
    step = 1 / 5
    expected = np.arange(1, 5) * step
    assert np.all(np.abs(times - expected) <= 0.3 * step + 1e-12)
    assert np.all(np.diff(times, axis=1) > 0)
    np.testing.assert_allclose(times.mean(axis=0), expected, atol=0.01)


# ----------------------------------------------------------------------------- bias field


@needs_torchio
def test_bias_with_zero_coefficients_is_the_identity():
    values = smooth_volume((12, 10, 8), 0.0, 1.0)
    out = BIAS.apply(Scan(values, (1.0, 1.0, 3.0), "mri"), BIAS.params(coefficients=0.0), np.random.default_rng(0))
    np.testing.assert_allclose(out["degraded"], values, atol=1e-6)


@needs_torchio
@pytest.mark.parametrize("shape", [(12, 10, 8), (9, 11, 7)])
def test_bias_is_exp_of_the_drawn_polynomial_over_the_normalised_grid(shape):
    values = smooth_volume(shape, 0.1, 0.3)
    params = BIAS.params(coefficients=0.1, order=2)
    out = BIAS.apply(Scan(values, (0.7, 1.0, 2.5), "mri"), params, np.random.default_rng(11))["degraded"]
    assert out.max() < 1  # not clipped

    # x^i y^j z^k, i + j + k <= order, x outermost, over voxel centres scaled to [-1, 1] per axis
    u, v, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    coefficients = draw_coefficients(params, np.random.default_rng(11))
    powers = [(i, j, k) for i in range(3) for j in range(3 - i) for k in range(3 - i - j)]
    assert len(powers) == len(coefficients) == 10
    log_field = sum(c * u**i * v**j * w**k for c, (i, j, k) in zip(coefficients, powers))
    np.testing.assert_allclose(out / values, np.exp(log_field), rtol=2e-6)

    # and the log-ratio is a polynomial of degree 2, not 1: fit by least squares
    def residual(order):
        basis = np.stack([(u**i * v**j * w**k).ravel() for i, j, k in itertools.product(range(order + 1), repeat=3)
                          if i + j + k <= order], axis=1)
        target = np.log(out / values).ravel()
        fit, *_ = np.linalg.lstsq(basis, target, rcond=None)
        return np.abs(basis @ fit - target).max()

    assert residual(2) < 1e-5
    assert residual(1) > 1e-3


@needs_torchio
def test_bias_clips_above_one_and_stays_positive():
    values = np.full((8, 8, 8), 0.9)
    out = BIAS.apply(Scan(values, (1.0, 1.0, 1.0), "mri"), BIAS.params(coefficients=1.0, order=1),
                     np.random.default_rng(2))["degraded"]
    assert out.max() == 1.0 and out.min() > 0
    assert (out < 0.9 - 1e-3).any()  # darkened somewhere too


# ----------------------------------------------------------------------------- ghosting


@needs_torchio
def test_ghosting_with_zero_intensity_or_no_ghosts_is_the_identity():
    values = smooth_volume((16, 12, 8), 0.0, 1.0)
    scan = Scan(values, (1.0, 1.0, 1.0), "mri")
    for settings in ({"intensity": 0.0}, {"num_ghosts": 0}):
        out = GHOSTING.apply(scan, GHOSTING.params(**settings), np.random.default_rng(0))
        np.testing.assert_allclose(out["degraded"], values, atol=1e-6)


@needs_torchio
@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_ghosts_of_a_point_lie_on_its_line_along_the_axis_only(axis):
    shape, point = (16, 14, 12), (5, 9, 4)
    values = np.zeros(shape)
    values[point] = 0.8
    out = GHOSTING.apply(Scan(values, (1.0, 1.0, 1.0), "mri"), GHOSTING.params(axis=axis, num_ghosts=4, intensity=1.0),
                         np.random.default_rng(0))["degraded"]
    changed = np.abs(out - values) > 1e-4
    a = "xyz".index(axis)
    line = np.zeros(shape, dtype=bool)
    index = list(point)
    index[a] = slice(None)
    line[tuple(index)] = True
    assert not (changed & ~line).any()
    ghosts = changed & line
    ghosts[point] = False
    assert ghosts.any()  # copies elsewhere on the line


@needs_torchio
@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_ghosting_keeps_every_line_sum_along_its_axis(axis):
    values = smooth_volume((16, 14, 12), 0.3, 0.7, sigma=1.5)  # no clipping
    out = GHOSTING.apply(Scan(values, (1.0, 1.0, 1.0), "mri"), GHOSTING.params(axis=axis, num_ghosts=5, intensity=0.8),
                         np.random.default_rng(0))["degraded"]
    assert 0 < out.min() and out.max() < 1
    a = "xyz".index(axis)
    np.testing.assert_allclose(out.sum(axis=a), values.sum(axis=a), atol=1e-4)  # intensity moved along the axis only
    others = [b for b in range(3) if b != a]
    assert np.abs(out.sum(axis=others[0]) - values.sum(axis=others[0])).max() > 1e-2


@needs_torchio
def test_ghosting_restore_keeps_the_central_k_space_planes():
    values = smooth_volume((16, 16, 8), 0.35, 0.65, sigma=0.7)  # high frequencies too
    params = GHOSTING.params(axis="y", num_ghosts=2, intensity=1.0, restore=0.5)
    out = GHOSTING.apply(Scan(values, (1.0, 1.0, 1.0), "mri"), params, np.random.default_rng(0))["degraded"]
    assert 0 < out.min() and out.max() < 1  # not clipped
    k_out, k_clean = centred_kspace(out), centred_kspace(values)
    scale = np.abs(k_clean).max()
    # Planes 0, 2, 4, ..., 14 across y are zeroed, then round(0.5 × 16) = 8 central planes 4..11 put back. The
    # real part makes k-space Hermitian, plane z becoming F(z) (M(z) + M(-z)) / 2 with -z at plane (16 - z) % 16:
    for z in range(5, 12):  # both z and -z restored
        assert np.abs(k_out[:, z] - k_clean[:, z]).max() / scale < 1e-5, z
    for z in (0, 2, 14):  # both zeroed
        assert np.abs(k_out[:, z]).max() / scale < 1e-5, z
    np.testing.assert_allclose(k_out[:, 12], k_clean[:, 12] / 2, atol=1e-5 * scale)  # -k_12 is the restored 4
    for z in (1, 3, 13, 15):  # odd planes untouched
        assert np.abs(k_out[:, z] - k_clean[:, z]).max() / scale < 1e-5, z
    assert np.abs(k_clean[:, [0, 2, 14]]).max() / scale > 1e-3  # so the zeroing was visible


# ----------------------------------------------------------------------------- inpaint


def body_of(scan: Scan) -> np.ndarray:
    return scan.values > (-500 if scan.modality == "ct" else 0.05)


@pytest.mark.parametrize("modality, fraction", [("ct", 0.1), ("mri", 0.1), ("ct", 0.9)])
def test_inpaint_boxes_hide_the_fraction_of_the_body_filled_with_the_visible_mean(modality, fraction):
    scan = body_scan(modality)
    params = INPAINT.params(shape="box", size_mm=6.0, fraction=fraction)
    out = INPAINT.apply(scan, params, np.random.default_rng(4))
    mask = out["mask"].astype(bool)
    assert out["mask"].dtype == np.uint8 and set(np.unique(out["mask"])) <= {0, 1}
    body = body_of(scan)
    box_voxels = 6 * 4 * 3  # 6 mm over spacing (1, 1.5, 2)
    assert abs((mask & body).sum() / body.sum() - fraction) <= 0.5 * box_voxels / body.sum()
    np.testing.assert_array_equal(out["degraded"][~mask], scan.values[~mask])
    np.testing.assert_allclose(out["degraded"][mask], scan.values[body & ~mask].mean(), rtol=1e-12)
    # inside the body's bounding box
    where = np.nonzero(body)
    for a in range(3):
        inside = np.nonzero(mask)[a]
        assert inside.min() >= where[a].min() and inside.max() <= where[a].max()


def test_inpaint_one_box_has_the_size_in_mm_on_an_anisotropic_grid():
    scan = body_scan("mri", spacing=(1.0, 1.5, 2.0))
    out = INPAINT.apply(scan, INPAINT.params(size_mm=12.0, fraction=1e-4, fill="value", fill_value=0.25),
                        np.random.default_rng(1))
    mask = out["mask"].astype(bool)
    idx = np.nonzero(mask)
    extents = [int(i.max() - i.min() + 1) for i in idx]
    assert extents == [12, 8, 6]  # 12 mm each way
    assert mask.sum() == 12 * 8 * 6  # one solid box
    assert np.all(out["degraded"][mask] == 0.25)
    np.testing.assert_array_equal(out["degraded"][~mask], scan.values[~mask])


def test_inpaint_blobs_hide_exactly_the_fraction_and_grow_with_size():
    scan = body_scan("ct", shape=(32, 32, 24), spacing=(1.0, 1.0, 1.0))
    body = body_of(scan)
    counts = []
    for size in (4.0, 14.0):
        out = INPAINT.apply(scan, INPAINT.params(shape="blobs", size_mm=size, fraction=0.15, fill="value",
                                                 fill_value=-1000.0), np.random.default_rng(2))
        mask = out["mask"].astype(bool)
        assert abs((mask & body).sum() - round(0.15 * body.sum())) <= 1
        np.testing.assert_array_equal(out["degraded"][~mask], scan.values[~mask])
        assert np.all(out["degraded"][mask] == -1000.0)
        counts.append(ndimage.label(mask)[1])
    assert counts[0] > 3 * counts[1] >= 3


def test_inpaint_with_no_fraction_hides_nothing():
    scan = body_scan("mri")
    for shape in ("box", "blobs"):
        out = INPAINT.apply(scan, INPAINT.params(shape=shape, fraction=0.0), np.random.default_rng(0))
        assert not out["mask"].any()
        np.testing.assert_array_equal(out["degraded"], scan.values)


# ----------------------------------------------------------------------------- outpaint


@pytest.mark.parametrize("modality, background", [("ct", -1000.0), ("mri", 0.0)])
def test_outpaint_keeps_a_cylinder_about_the_body_centre(modality, background):
    shape, spacing = (30, 26, 12), (1.2, 0.8, 2.5)
    scan = body_scan(modality, shape=shape, spacing=spacing, centre=(18.0, 10.0, 6.0), radii=(8.0, 7.0, 5.0))
    out = OUTPAINT.apply(scan, OUTPAINT.params(fov_mm=7.0), np.random.default_rng(0))
    cx, cy, _ = np.argwhere(body_of(scan)).mean(axis=0)
    assert abs(cx - 18) < 0.5 and abs(cy - 10) < 0.5  # not the volume's centre
    i, j, _ = np.indices(shape)
    outside = np.hypot((i - cx) * spacing[0], (j - cy) * spacing[1]) > 7.0
    np.testing.assert_array_equal(out["mask"], outside.astype(np.uint8))
    assert np.all(out["degraded"][outside] == background)
    np.testing.assert_array_equal(out["degraded"][~outside], scan.values[~outside])


def test_outpaint_about_the_volume_centre_and_a_slab_of_slices():
    shape, spacing = (20, 24, 16), (1.0, 1.0, 2.0)
    scan = body_scan("ct", shape=shape, spacing=spacing, centre=(6.0, 8.0, 4.0), radii=(5.0, 6.0, 4.0))
    out = OUTPAINT.apply(scan, OUTPAINT.params(fov_mm=9.0, centre="volume", z_fraction=0.5), np.random.default_rng(0))
    i, j, k = np.indices(shape)
    disc = np.hypot(i - 9.5, j - 11.5) <= 9.0
    kept_slices = np.nonzero((out["mask"] == 0).any(axis=(0, 1)))[0]
    np.testing.assert_array_equal(kept_slices, np.arange(4, 12))  # 8 of 16 slices about the centre 7.5
    expected_kept = disc & np.isin(k, kept_slices)
    np.testing.assert_array_equal(out["mask"], (~expected_kept).astype(np.uint8))
    np.testing.assert_array_equal(out["degraded"][expected_kept], scan.values[expected_kept])
    assert np.all(out["degraded"][~expected_kept] == -1000.0)

    # the slab follows the body when centred on it, shifted to stay inside the volume
    body = OUTPAINT.apply(scan, OUTPAINT.params(fov_mm=9.0, z_fraction=0.5), np.random.default_rng(0))
    cz = np.argwhere(body_of(scan))[:, 2].mean()
    kept_body = np.nonzero((body["mask"] == 0).any(axis=(0, 1)))[0]
    assert len(kept_body) == 8 and np.all(np.diff(kept_body) == 1)
    assert abs(kept_body.mean() - cz) <= 0.5 or kept_body[0] == 0
