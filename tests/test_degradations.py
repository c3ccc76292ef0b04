"""Degradations: the framework (parameters, ranges, per-subject draws), slice removal and k-space undersampling,
against values computed here independently."""

from __future__ import annotations

import numpy as np
import pytest

from medgen.core.errors import UsageError
from medgen.data import degradations
from medgen.data.degradations import KSPACE, SLICES, Scan
from medgen.data.degradations.slices import reduce_slices, upsample_slices


def ramp_scan(shape=(6, 5, 13), spacing=(1.0, 1.0, 2.0), modality="ct") -> Scan:
    rng = np.random.default_rng(1)
    return Scan(rng.normal(size=shape) * 100, spacing, modality)


# ----------------------------------------------------------------------------- the framework


def test_registry_and_command_list_agree():
    from medgen.commands.degrade import KINDS

    assert tuple(degradations.DEGRADATIONS) == KINDS
    for name, d in degradations.DEGRADATIONS.items():
        assert d.name == name and d.volumes and set(d.modalities) <= {"ct", "mri"}
        d.params()  # the defaults are valid
        assert all(f.metadata.get("help") for f in d.param_fields()), name


def test_settings_parse_types_ranges_and_refuse_unknowns():
    parsed = degradations.parse_settings(SLICES, ["factor=3", "mode=thick", "spacing_mm=2:6", "offset=0:2"])
    assert parsed == {"factor": 3, "mode": "thick", "spacing_mm": (2.0, 6.0), "offset": (0, 2)}
    with pytest.raises(UsageError, match="slices: no parameter 'dose'"):
        degradations.parse_settings(SLICES, ["dose=0.2"])
    with pytest.raises(UsageError, match="factor='2.5' is not a int"):
        degradations.parse_settings(SLICES, ["factor=2.5"])
    with pytest.raises(UsageError, match="low ≤ high"):
        degradations.parse_settings(SLICES, ["factor=4:2"])
    with pytest.raises(UsageError, match="NAME=VALUE"):
        degradations.parse_settings(SLICES, ["factor"])
    with pytest.raises(UsageError, match="slices: mode='thin'"):
        degradations.sample_params(SLICES, degradations.parse_settings(SLICES, ["mode=thin"]), np.random.default_rng(0))


def test_ranges_are_drawn_per_subject_reproducibly_and_within_bounds():
    settings = degradations.parse_settings(SLICES, ["spacing_mm=2:6", "offset=0:2"])
    draws = [degradations.sample_params(SLICES, settings, degradations.subject_rng(7, f"s{i}")) for i in range(200)]
    spacings = np.array([p.spacing_mm for p in draws])
    offsets = np.array([p.offset for p in draws])
    assert spacings.min() >= 2 and spacings.max() <= 6 and 3.6 < spacings.mean() < 4.4
    assert set(offsets) == {0, 1, 2}  # an integer range includes both ends
    again = degradations.sample_params(SLICES, settings, degradations.subject_rng(7, "s3"))
    assert again == draws[3]
    assert degradations.sample_params(SLICES, settings, degradations.subject_rng(8, "s3")) != draws[3]


# ----------------------------------------------------------------------------- slices


@pytest.mark.parametrize("upsample", ["nearest", "linear"])
@pytest.mark.parametrize("factor,offset", [(2, 0), (4, 0), (4, 3), (3, 1)])
def test_slice_removal_then_upsampling_keeps_the_kept_slices_exactly(factor, offset, upsample):
    scan = ramp_scan()
    out = SLICES.apply(scan, SLICES.params(factor=factor, offset=offset, upsample=upsample), np.random.default_rng(0))
    degraded = out["degraded"]
    assert degraded.shape == scan.values.shape
    kept = np.arange(offset, scan.values.shape[-1], factor)
    np.testing.assert_array_equal(degraded[..., kept], scan.values[..., kept])
    removed = np.setdiff1d(np.arange(scan.values.shape[-1]), kept)
    if upsample == "nearest":
        for z in removed:  # every slice is a copy of the nearest kept one (ties: the lower one)
            nearest = kept[np.argmin(np.abs(kept - z))]
            np.testing.assert_array_equal(degraded[..., z], scan.values[..., nearest])
    else:
        for z in removed:
            below, above = kept[kept < z], kept[kept > z]
            if len(below) and len(above):
                w = (z - below[-1]) / (above[0] - below[-1])
                expected = (1 - w) * scan.values[..., below[-1]] + w * scan.values[..., above[0]]
            else:
                expected = scan.values[..., (below[-1] if len(below) else above[0])]
            np.testing.assert_allclose(degraded[..., z], expected, rtol=1e-12, atol=1e-12)


def test_factor_one_is_the_identity_and_spacing_mm_sets_the_factor():
    scan = ramp_scan()
    np.testing.assert_array_equal(SLICES.apply(scan, SLICES.params(factor=1), None)["degraded"], scan.values)
    # 6 mm slices from 2 mm ones: every third slice
    by_mm = SLICES.apply(scan, SLICES.params(spacing_mm=6.0), None)["degraded"]
    by_factor = SLICES.apply(scan, SLICES.params(factor=3), None)["degraded"]
    np.testing.assert_array_equal(by_mm, by_factor)


def test_thick_slices_are_slab_means_at_the_slab_centres():
    scan = ramp_scan(shape=(3, 2, 10))
    low, centres = reduce_slices(scan.values, 4, "thick", offset=1)
    # slabs [1,5), [5,9), [9,10)
    np.testing.assert_allclose(low[..., 0], scan.values[..., 1:5].mean(-1))
    np.testing.assert_allclose(low[..., 1], scan.values[..., 5:9].mean(-1))
    np.testing.assert_allclose(low[..., 2], scan.values[..., 9])
    np.testing.assert_allclose(centres, [2.5, 6.5, 9.0])
    # a linear ramp along z survives thick slicing + linear upsampling between slab centres exactly
    z = np.arange(10.0)
    ramp = np.broadcast_to(z, (3, 2, 10)).copy()
    low, centres = reduce_slices(ramp, 4, "thick")
    back = upsample_slices(low, centres, 10, "linear")
    inside = (z >= centres[0]) & (z <= centres[-1])
    np.testing.assert_allclose(back[..., inside], ramp[..., inside])


def test_slice_offset_beyond_the_factor_is_refused():
    with pytest.raises(UsageError, match="offset=4"):
        SLICES.apply(ramp_scan(), SLICES.params(factor=4, offset=4), None)


# ----------------------------------------------------------------------------- k-space


def mri_scan(n=32, depth=4) -> Scan:
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    head = ((x / 0.8) ** 2 + (y / 0.9) ** 2 < 1) * 0.6 + ((x / 0.3) ** 2 + ((y - 0.2) / 0.2) ** 2 < 1) * 0.4
    return Scan(np.repeat(head[..., None], depth, axis=-1), (1.0, 1.0, 3.0), "mri")


def centred_kspace(slice_2d: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(slice_2d)))


def test_kspace_acceleration_one_is_the_identity():
    scan = mri_scan()
    out = KSPACE.apply(scan, KSPACE.params(acceleration=1.0), np.random.default_rng(0))["degraded"]
    np.testing.assert_allclose(out, scan.values, atol=1e-5)


@pytest.mark.parametrize("axis", ["y", "x"])
@pytest.mark.parametrize("pattern", ["random", "equispaced"])
def test_kspace_zero_filled_reconstruction_matches_an_independent_one(axis, pattern):
    """The output is |IFFT(mask · FFT(slice))| with numpy's FFT; the mask keeps the centre and about 1/R of
    the lines, along the phase-encoding axis only, and is the same for every slice."""
    from medgen.data.degradations.kspace import undersample

    scan = mri_scan()
    params = KSPACE.params(acceleration=4.0, center_fraction=0.125, pattern=pattern, axis=axis)
    recon, mask = undersample(scan.values, params, seed=5)
    n = scan.values.shape[0]
    assert mask.shape == (n,) and set(np.unique(mask)) <= {0.0, 1.0}
    centre = int(round(n * 0.125))
    start = (n - centre + 1) // 2
    assert mask[start:start + centre].all()
    assert 0.15 < mask.mean() < 0.45
    for k in range(scan.values.shape[-1]):
        kspace = centred_kspace(scan.values[..., k])
        line_mask = mask[None, :] if axis == "y" else mask[:, None]
        expected = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace * line_mask))))
        np.testing.assert_allclose(recon[..., k], expected, atol=1e-5)
    # aliasing: the image changed, and it is not a blur of the same energy along the readout axis
    assert np.abs(recon - scan.values).mean() > 0.01


def test_kspace_is_reproducible_per_seed_and_refuses_bad_parameters():
    scan = mri_scan()
    a = KSPACE.apply(scan, KSPACE.params(), np.random.default_rng(3))["degraded"]
    b = KSPACE.apply(scan, KSPACE.params(), np.random.default_rng(3))["degraded"]
    c = KSPACE.apply(scan, KSPACE.params(), np.random.default_rng(4))["degraded"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    with pytest.raises(UsageError, match="kspace: acceleration=0.5"):
        KSPACE.params(acceleration=0.5)
    with pytest.raises(UsageError, match="kspace: center_fraction=0.5"):
        KSPACE.params(acceleration=4.0, center_fraction=0.5)


@pytest.mark.parametrize("name", sorted(degradations.DEGRADATIONS))
def test_every_degradation_module_has_a_passing_runnable_example(name):
    import doctest
    import importlib

    module = importlib.import_module(degradations.DEGRADATIONS[name].apply.__module__)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0, (module.__name__, result)
