"""Thorax phantoms at two breathing states: the image at end-inspiration, ``expiration`` the same subject
and scan at end-expiration, and the true displacement between them (``breath_x/y/z``, mm) in the
registration convention expiration(p) = image(p + u(p))."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.core.errors import UsageError
from medgen.data.dataset import VolumeDataset
from medgen.data.phantoms import domains, generate, phantom_set, thorax_ct, volume_seed, volume_specs
from medgen.data.preprocess import PreprocessSettings, preprocess_folder
from medgen.inference.register import warp
from medgen.metrics.registration import jacobian_determinant
from phantom_sets import digests, load, read_manifest, run_phantoms

torch.set_num_threads(1)

BREATH = ("breath_x", "breath_y", "breath_z")
LUNGS = (thorax_ct.LUNG, thorax_ct.EMPHYSEMA)


@lru_cache(maxsize=None)
def thorax(size, seed, breathing=True, nodules=False):
    return generate("thorax-ct", size, seed, breathing=breathing, nodules=nodules)


def anatomy(seed: int) -> thorax_ct._Anatomy:
    """The subject's analytic anatomy, drawn as the generator draws it."""
    s_par, s_lat = np.random.SeedSequence(seed).spawn(7)[:2]
    return thorax_ct._Anatomy(thorax_ct._Subject.sample(np.random.default_rng(s_par)), np.random.default_rng(s_lat))


def in_voxels(ph) -> np.ndarray:
    return thorax_ct.breath_field(ph) / np.asarray(ph.spacing, dtype=np.float32).reshape(3, 1, 1, 1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# -- the expiration scan is the inspiration warped by the written field ----------------------------------


@pytest.mark.parametrize("index", [0, 1, 2])
def test_warping_the_inspiration_with_the_field_gives_the_expiration(index):
    ph = thorax(32, volume_seed(0, index))
    u = in_voxels(ph)
    tissue, expiration_tissue = ph.volumes["tissue"], ph.volumes["expiration_tissue"]
    right, wrong = warp(tissue, u, "nearest"), warp(tissue, -u, "nearest")
    # the label maps: the registration convention reproduces expiration's, the negated field does not
    assert np.mean(right == expiration_tissue) > 0.999
    assert dice(np.isin(right, LUNGS), np.isin(expiration_tissue, LUNGS)) > 0.999
    assert np.mean(wrong == expiration_tissue) < 0.99
    assert dice(np.isin(wrong, LUNGS), np.isin(expiration_tissue, LUNGS)) < 0.95
    # and the images: the warped noise-free inspiration differs from expiration by its noise only
    noise_hu = ph.factors["noise_hu"]
    rms = lambda a: float(np.sqrt(np.mean((a - ph.volumes["expiration"]) ** 2)))  # noqa: E731
    assert rms(warp(ph.noise_free, u)) < 1.2 * noise_hu + 2.0
    assert rms(warp(ph.noise_free, -u)) > 3.0 * noise_hu
    assert rms(ph.noise_free) > 2.0 * noise_hu  # the states differ: without the field it is far off too


def test_written_field_reproduces_the_written_expiration(tmp_path):
    out = tmp_path / "set"
    assert run_phantoms("--kind", "thorax-ct", "--n", "2", "--size", "24", "--seed", "5", "--breathing",
                        "--out", str(out)) == 0
    for row in read_manifest(out):
        field = np.stack([load(out / row[name]) for name in BREATH])
        assert field.dtype == np.float32
        spacing = np.abs(np.diag(nib.load(str(out / row["file"])).affine)[:3])
        u = field / spacing.reshape(3, 1, 1, 1)
        tissue, expiration = load(out / row["tissue"]), load(out / row["expiration_tissue"])
        assert load(out / row["expiration"]).dtype == np.int16
        assert np.mean(warp(tissue, u, "nearest") == expiration) > 0.999
        assert np.mean(warp(tissue, -u, "nearest") == expiration) < 0.99


# -- the breathing model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 3])
def test_field_is_zero_at_the_apex_and_in_the_spine_and_largest_at_the_lung_base(index):
    seed = volume_seed(0, index)
    ph = thorax(32, seed)
    cc, ap = ph.factors["breathing_cc_mm"], ph.factors["breathing_ap_mm"]
    assert (cc, ap) == thorax_ct.breathing_amplitudes(seed)
    u = thorax_ct.breath_field(ph)
    assert u.dtype == np.float32 and u.shape == (3, 32, 32, 32)
    assert np.all(u[0] == 0) and np.all(u[1] >= 0) and np.all(u[2] <= 0)  # inwards and cranially
    # the spine (vertebral bodies, canal and arches) is rigid
    an = anatomy(seed)
    grid = thorax_ct.request_grid(32, None, thorax_ct.FOV_MM)
    x, y, z = grid.xyz
    spine = (an.vb_sdf(x, y, z) <= 0) | (np.hypot(x - an.s.cx, y - an.canal_y(z)) <= 16.0)
    spine = np.broadcast_to(spine, grid.shape)
    assert spine.sum() > 20 and np.all(u[:, spine] == 0)
    # craniocaudal: ~0 at the lung apices, the full amplitude at the lung base
    lung = np.isin(ph.volumes["tissue"], LUNGS)
    slices = np.flatnonzero(lung.any(axis=(0, 1)))
    top, base = slices.max(), slices.min()
    assert np.abs(u[2][..., top][lung[..., top]]).max() < 0.1 * cc
    assert np.abs(u[2][..., base][lung[..., base]]).max() == pytest.approx(cc, rel=1e-6)
    assert np.abs(u[2][lung]).max() == pytest.approx(cc, rel=1e-6)
    assert np.abs(u[2]).max() == pytest.approx(cc, rel=1e-6) and u[1].max() == pytest.approx(ap, rel=1e-6)
    assert np.median(np.abs(u[2][..., base][lung[..., base]])) > 0.8 * cc
    # the displacement grows from the apex to the base: its largest value per axial slice
    per_slice = np.abs(u[2]).max(axis=(0, 1))[base : top + 1]
    assert np.all(np.diff(per_slice) <= 0) and per_slice[0] > 5 * per_slice[-1]  # slices run base -> apex


@pytest.mark.parametrize("index", range(6))
def test_amplitudes_are_in_range_and_the_field_does_not_fold(index):
    seed = volume_seed(1, index)
    ph = generate("thorax-ct", (32, 32, 24), seed, spacing=(11.0, 11.0, 16.0), breathing=True)
    lo, hi = thorax_ct.BREATHING_CC_MM
    assert lo <= ph.factors["breathing_cc_mm"] <= hi
    lo, hi = thorax_ct.BREATHING_AP_MM
    assert lo <= ph.factors["breathing_ap_mm"] <= hi
    jac = jacobian_determinant(thorax_ct.breath_field(ph), spacing=ph.spacing)
    assert jac.min() > 0.9 and jac.max() < 1.3
    # the lungs expand from expiration to inspiration: det > 1 in them
    lung = np.isin(ph.volumes["expiration_tissue"], LUNGS)
    assert np.median(jac[lung]) > 1.01


@pytest.mark.parametrize("index", [0, 1, 2, 4])
def test_lungs_are_smaller_and_the_diaphragm_higher_at_expiration(index):
    ph = thorax(32, volume_seed(0, index))
    f = ph.factors
    assert 0.85 * f["lung_volume_ml"] < f["lung_volume_ml_expiration"] < 0.98 * f["lung_volume_ml"]
    inspiration = np.isin(ph.volumes["tissue"], LUNGS)
    expiration = np.isin(ph.volumes["expiration_tissue"], LUNGS)
    assert expiration.sum() < 0.98 * inspiration.sum()
    # the lung bases rise: the lungs' centre of mass moves cranially, by a good part of the amplitude
    z_mm = (np.arange(32) - 15.5) * ph.spacing[2]
    centre = lambda m: float((m.sum(axis=(0, 1)) * z_mm).sum() / m.sum())  # noqa: E731
    assert centre(expiration) - centre(inspiration) > 0.2 * f["breathing_cc_mm"]
    # the measured volume follows the rule of lung_volume_ml: resampled lung mask below -500 HU
    lung_exp = warp(ph.masks["lung"].astype(np.uint8), in_voxels(ph), "nearest") > 0
    measured = int((lung_exp & (ph.volumes["expiration"] < thorax_ct.LUNG_MAX_HU)).sum())
    voxel_ml = float(np.prod(ph.spacing)) / 1000.0
    assert f["lung_volume_ml_expiration"] == pytest.approx(measured * voxel_ml, rel=0.01)


def test_breathing_changes_nothing_else_and_nodules_move_with_the_lungs():
    seed = volume_seed(0, 5)
    both, plain = thorax(24, seed, nodules=True), thorax(24, seed, breathing=False, nodules=True)
    assert np.array_equal(both.array, plain.array) and np.array_equal(both.noise_free, plain.noise_free)
    assert all(np.array_equal(both.masks[k], plain.masks[k]) for k in plain.masks)
    assert set(both.volumes) == {"tissue", *thorax_ct.BREATHING_VOLUMES, *BREATH}
    assert np.array_equal(both.volumes["tissue"], plain.volumes["tissue"])
    assert {k: both.factors[k] for k in plain.factors} == plain.factors
    assert list(both.factors)[len(plain.factors):] == list(thorax_ct.BREATHING_FACTORS)
    # expiration: the same subject (same HU classes, new noise)
    assert not np.array_equal(both.volumes["expiration"], both.array)
    assert set(np.unique(both.volumes["expiration_tissue"])) <= set(np.unique(both.volumes["tissue"]))
    with pytest.raises(ValueError, match="lesions are not moved with the breathing"):
        generate("thorax-ct", 16, seed, lesions=("nodule",), breathing=True)
    with pytest.raises(ValueError, match="breathing states are only available for thorax-ct"):
        generate("brain-mri", 16, seed, breathing=True)
    with pytest.raises(ValueError, match="breathing=True"):
        thorax_ct.breath_field(plain)


# -- sets: default output, manifest, domain B, preprocess, CLI ---------------------------------------------


#: Volume 0 of seed 6 at 20^3 as generated before --breathing existed.
FINGERPRINT = {"tissue": [5779, 1142, 302, 377, 311, 87, 0, 2, 0], "image_sum": -5939473.0,
               "emphysema_pct": 1.5873015873015872}


def test_default_output_is_unchanged_and_the_option_only_adds(tmp_path):
    common = ("--kind", "thorax-ct", "--n", "2", "--size", "20", "--seed", "6")
    assert run_phantoms(*common, "--out", str(tmp_path / "plain")) == 0
    assert run_phantoms(*common, "--breathing", "--out", str(tmp_path / "full")) == 0
    plain, full = digests(tmp_path / "plain"), digests(tmp_path / "full")
    # the option only adds files: the image and tissue files are byte for byte the same
    assert set(plain) < set(full) and all(full[name] == digest for name, digest in plain.items())
    added = {name.split("/")[0] for name in set(full) - set(plain)}
    assert added == {"expiration", "expiration_tissue", *BREATH}
    rows = read_manifest(tmp_path / "plain")
    assert list(rows[0]) == ["id", "file", "kind", "label", "lung_volume_ml", "bone_volume_ml", "emphysema_pct",
                             "body_size_mm", "heart_volume_ml", "noise_hu", "tissue"]
    meta = json.loads((tmp_path / "plain" / "phantoms.json").read_text())
    assert "breathing" not in meta and list(meta["volumes"]) == ["tissue"]
    # the same subjects as before the option existed
    ph = thorax(20, volume_seed(6, 0), breathing=False)
    assert np.bincount(ph.volumes["tissue"].ravel(), minlength=9).tolist() == FINGERPRINT["tissue"]
    # up to float32 rounding, which differs in the last bit between CPUs (1 HU in this sum on one of them)
    assert float(ph.array.sum(dtype=np.float64)) == pytest.approx(FINGERPRINT["image_sum"], rel=1e-6, abs=0)
    assert ph.factors["emphysema_pct"] == FINGERPRINT["emphysema_pct"]
    # the manifest: the factors, then the new columns, then the volumes, then the field
    full_rows = read_manifest(tmp_path / "full")
    assert list(full_rows[0]) == [*list(rows[0])[:-1], *thorax_ct.BREATHING_FACTORS, "tissue",
                                  *thorax_ct.BREATHING_VOLUMES, *BREATH]
    for row, full_row in zip(rows, full_rows):
        assert {k: full_row[k] for k in row} == row
        assert float(full_row["lung_volume_ml_expiration"]) < float(row["lung_volume_ml"])
    meta = json.loads((tmp_path / "full" / "phantoms.json").read_text())
    assert list(meta["volumes"]) == ["tissue", *thorax_ct.BREATHING_VOLUMES]  # declared for preprocess
    assert not set(BREATH) & set(meta["volumes"])  # not declared: preprocess cannot carry mm
    assert meta["volumes"]["expiration"]["dtype"] == "int16"
    assert meta["breathing"]["volumes"] == list(BREATH)
    assert meta["breathing"]["breathing_cc_mm"]["range"] == list(thorax_ct.BREATHING_CC_MM)
    assert "expiration(p) = image(p + u(p))" in meta["breathing"]["convention"]


def test_volume_i_is_the_same_for_any_n_and_a_smaller_set_removes_the_fields(tmp_path):
    opts = ("--kind", "thorax-ct", "--size", "16", "--seed", "8", "--breathing")
    assert run_phantoms(*opts, "--n", "2", "--out", str(tmp_path / "two")) == 0
    assert run_phantoms(*opts, "--n", "3", "--out", str(tmp_path / "three")) == 0
    two, three = digests(tmp_path / "two"), digests(tmp_path / "three")
    assert len(two) == 2 * 7 and two == {k: v for k, v in three.items() if k in two}
    row = read_manifest(tmp_path / "three")[1]
    ph = thorax(16, volume_seed(8, 1))
    for name in (*thorax_ct.BREATHING_VOLUMES, *BREATH):
        assert np.array_equal(load(tmp_path / "three" / row[name]), ph.volumes[name])
    assert float(row["breathing_cc_mm"]) == ph.factors["breathing_cc_mm"]
    assert run_phantoms(*opts[:-1], "--n", "2", "--out", str(tmp_path / "three")) == 0
    assert not (tmp_path / "three" / "breath_x").exists() and not (tmp_path / "three" / "expiration").exists()


def test_domain_b_expiration_is_on_the_second_scanner(tmp_path):
    out = tmp_path / "b"
    assert run_phantoms("--kind", "thorax-ct", "--n", "1", "--size", "24", "--seed", "2", "--domain", "B",
                        "--breathing", "--out", str(out)) == 0
    row = read_manifest(out)[0]
    seed = volume_seed(2, 0)
    ph = thorax(24, seed)
    expiration_b = load(out / row["expiration"]).astype(np.float32)
    assert np.array_equal(load(out / row["file"]), domains.render(ph, "B", seed))
    assert np.array_equal(load(out / row["expiration_tissue"]), ph.volumes["expiration_tissue"])
    # B's expiration is B's scanner on the warped subject: its noise-free version differs by noise only ...
    exp = thorax_ct.expiration_phantom(ph)
    clean_b = domains.scan_ct(exp, domains.CtScanner(**{**domains.THORAX_B.__dict__, "noise_hu": 0.0}), seed)
    assert float(np.std(expiration_b - clean_b)) < 1.5 * domains.THORAX_B.noise_hu
    # ... with noise of its own: not the image's B noise, not domain A's expiration
    b_image_noise = load(out / row["file"]) - domains.scan_ct(
        ph, domains.CtScanner(**{**domains.THORAX_B.__dict__, "noise_hu": 0.0}), seed)
    assert abs(np.corrcoef((expiration_b - clean_b).ravel(), b_image_noise.ravel())[0, 1]) < 0.2
    assert not np.array_equal(expiration_b, ph.volumes["expiration"])
    meta = json.loads((out / "phantoms.json").read_text())
    assert meta["volumes"]["expiration"]["units"].endswith("domain B (second scanner)")


def test_preprocess_carries_the_expiration_but_not_the_field(tmp_path):
    src = tmp_path / "breathing"
    assert run_phantoms("--kind", "thorax-ct", "--n", "2", "--size", "24", "--seed", "1", "--breathing",
                        "--out", str(src)) == 0
    summary = preprocess_folder(src, tmp_path / "data", PreprocessSettings(modality="ct", size=16),
                                progress=False, log=lambda msg: None)
    assert not summary.failed
    info = json.loads((tmp_path / "data" / "preprocess.json").read_text())
    assert set(info["volumes"]) == {"image", "tissue", "expiration", "expiration_tissue"}
    for item in VolumeDataset(tmp_path / "data", split="all", keys=("image", "tissue", "expiration_tissue")):
        inspiration = np.isin(item["tissue"][0].numpy(), LUNGS)
        expiration = np.isin(item["expiration_tissue"][0].numpy(), LUNGS)
        assert 0 < expiration.sum() < inspiration.sum()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kind", "brain-mri", "--breathing"], "--breathing is only available for --kind thorax-ct"),
        (["--kind", "thorax-ct", "--breathing", "--lesions", "nodule"],
         "--breathing cannot be combined with --lesions (lesions are not moved with the breathing)"),
    ],
)
def test_cli_usage_errors(tmp_path, argv, message):
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        run_phantoms(*argv, "--out", str(tmp_path / "x"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_the_light_copies_agree():
    assert phantom_set.BREATHING_VOLUME_NAMES == thorax_ct.BREATHING_VOLUMES
    assert phantom_set.BREATH_VOLUME_NAMES == thorax_ct.BREATH_DISPLACEMENT_VOLUMES == BREATH
    for domain in ("A", "B", "both"):
        assert phantom_set.volume_names("thorax-ct", domain, breathing=True) == tuple(
            volume_specs("thorax-ct", domain, breathing=True))
    assert volume_specs("thorax-ct", breathing=True)["expiration_tissue"]["classes"] == volume_specs(
        "thorax-ct")["tissue"]["classes"]
