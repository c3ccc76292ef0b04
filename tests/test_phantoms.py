"""Phantom data sets: determinism, ground truth that tracks the image, realistic values, CLI."""

from __future__ import annotations

import argparse
import csv
import json
import re
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medgen.data.phantoms import KINDS, generate, volume_seed
from medgen.core.errors import UsageError

THORAX_SEEDS = range(10)
THORAX_SIZE = 48  # at 32³ (12.5 mm voxels) partial volume caps the measurable emphysema near 15 %


@lru_cache(maxsize=None)
def thorax(size: int, seed: int, nodules: bool = False):
    return generate("thorax-ct", size, seed, nodules=nodules)


@lru_cache(maxsize=None)
def brain(size: int, seed: int):
    return generate("brain-mri", size, seed)


def corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


# -- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_volume_other_seed_other_volume(kind):
    a = generate(kind, 32, 7)
    b = generate(kind, 32, 7)
    c = generate(kind, 32, 8)
    assert a.array.dtype == np.float32 and a.array.shape == (32, 32, 32)
    assert np.array_equal(a.array, b.array)
    assert a.factors == b.factors
    assert np.abs(a.array - c.array).mean() > 1.0
    assert a.factors != c.factors


def test_volume_seeds_are_distinct_and_do_not_depend_on_the_count():
    seeds = [volume_seed(0, i) for i in range(50)]
    assert len(set(seeds)) == 50
    assert volume_seed(0, 3) == volume_seed(0, 3) != volume_seed(1, 3)


def test_anatomy_does_not_depend_on_grid_size():
    # same subject at two resolutions: physical factors agree within partial-volume error
    lo, hi = thorax(32, 3).factors, thorax(THORAX_SIZE, 3).factors
    assert lo["lung_volume_ml"] == pytest.approx(hi["lung_volume_ml"], rel=0.1)
    assert lo["emphysema_pct"] == pytest.approx(hi["emphysema_pct"], abs=1.0)
    assert lo["body_size_mm"] == pytest.approx(hi["body_size_mm"], abs=400 / 32)


# -- thorax CT: ground truth tracks the image --------------------------------------------


def test_thorax_factors_track_the_image():
    lung_hu, bone_hu, emph_truth, rows = [], [], [], []
    for seed in THORAX_SEEDS:
        ph = thorax(THORAX_SIZE, seed)
        hu, m, f = ph.array, ph.masks, ph.factors
        voxel_ml = float(np.prod(ph.spacing)) / 1000.0
        # the evaluation rule: -950..-500 HU inside the body, plus < -950 HU inside the lung
        lung = (((hu >= -950) & (hu <= -500) & m["body"]) | ((hu < -950) & m["lung"])).sum()
        lung_hu.append(lung * voxel_ml)
        bone_hu.append((hu > 300).sum() * voxel_ml)
        # ground-truth emphysema: lung voxels whose noise-free value is below -950 HU
        emph_truth.append(100.0 * m["emphysema"].sum() / (m["lung"] & (hu < -500)).sum())
        rows.append(f)
        # emphysema % recomputed from its definition on the saved image
        in_lung = m["lung"] & (hu < -500)
        assert f["emphysema_pct"] == pytest.approx(100.0 * (in_lung & (hu < -950)).sum() / in_lung.sum(), abs=1e-3)
        # body size: left-right extent of everything denser than air
        cols = np.flatnonzero((ndimage.binary_opening(hu > -500)).any(axis=(1, 2)))
        assert f["body_size_mm"] == pytest.approx((cols[-1] - cols[0] + 1) * ph.spacing[0], abs=2 * ph.spacing[0])
        # label: severity class from the documented thresholds
        assert f["label"] == int(np.digitize(f["emphysema_pct"], [5.0, 10.0, 20.0]))
    lung_ml = [r["lung_volume_ml"] for r in rows]
    bone_ml = [r["bone_volume_ml"] for r in rows]
    emph = [r["emphysema_pct"] for r in rows]
    assert corr(lung_hu, lung_ml) > 0.95
    assert np.allclose(lung_hu, lung_ml, rtol=0.1)
    assert corr(bone_hu, bone_ml) > 0.95
    assert all(b >= r - 1e-6 for b, r in zip(bone_hu, bone_ml))  # nothing but bone exceeds +300 HU
    # the measured emphysema tracks the true emphysema regions (only noise differs)
    assert corr(emph_truth, emph) > 0.95
    assert np.allclose(emph_truth, emph, atol=2.0)
    # the subjects differ: body size and emphysema vary over a realistic range
    assert np.ptp([r["body_size_mm"] for r in rows]) > 40
    assert np.ptp(emph) > 10


def test_thorax_hounsfield_values_are_realistic():
    for seed in (0, 1):
        ph = thorax(64, seed)
        hu, m = ph.array, ph.masks
        assert np.array_equal(hu, np.round(hu))  # integer HU, as stored in int16
        assert -900 <= np.median(hu[m["lung"]]) <= -800
        assert abs(np.median(hu[~m["body"]]) + 1000) <= 10
        assert 0 <= np.median(hu[m["heart"]]) <= 70
        # spine: dense bone in the midline, posterior half
        mid = hu[28:36, :32, :]
        assert mid.max() > 500
        assert hu.min() >= -1024
        # a subcutaneous fat layer exists: a visible share of the body is -150..-50 HU
        fat = ((hu > -150) & (hu < -50) & m["body"]).sum() / m["body"].sum()
        assert fat > 0.03
        # anatomy sides: heart centre left of midline (lower x) and anterior (higher y)
        cx, cy, _ = ndimage.center_of_mass(m["heart"])
        bx, by, _ = ndimage.center_of_mass(m["body"])
        assert cx < bx and cy > by
        # trachea at the top of the volume: air inside the body, near the midline
        top = np.where(m["body"][:, :, -3], hu[:, :, -3], 0.0)
        ix, _ = np.unravel_index(np.argmin(top), top.shape)
        assert top.min() < -500 and abs(ix - bx) < 3


def test_emphysema_classes_are_roughly_balanced_and_hit():
    from medgen.data.phantoms import thorax_ct

    # the per-subject target extent (cheap to draw: no volume needed) gives balanced classes
    targets = [
        thorax_ct._Subject.sample(np.random.default_rng(np.random.SeedSequence(volume_seed(0, i)).spawn(6)[0]))
        for i in range(400)
    ]
    counts = np.bincount([thorax_ct.severity_class(t.emph_target_pct) for t in targets], minlength=4)
    assert counts.min() >= 0.15 * 400 and counts.max() <= 0.35 * 400
    # and the final noisy image hits each subject's target
    for seed in THORAX_SEEDS:
        subject = thorax_ct._Subject.sample(np.random.default_rng(np.random.SeedSequence(seed).spawn(6)[0]))
        got = thorax(THORAX_SIZE, seed).factors["emphysema_pct"]
        assert got == pytest.approx(subject.emph_target_pct, abs=1.0)


def test_nodules_are_added_without_changing_the_rest():
    seed = next(s for s in range(20) if thorax(48, s, True).factors["nodule_count"] > 0)
    with_n, without = thorax(48, seed, True), thorax(48, seed)
    nods = json.loads(with_n.factors["nodule_positions"])
    assert len(nods) == with_n.factors["nodule_count"] and "nodule_count" not in without.factors
    changed = with_n.array != without.array
    near = np.zeros_like(changed)
    idx = np.indices(changed.shape)
    for n in nods:
        d = np.sqrt(sum((idx[i] - n[k]) ** 2 for i, k in enumerate("xyz")))
        near |= d <= n["radius_vox"] + 3
        # the nodule is solid tissue inside the lung
        c = tuple(int(round(n[k])) for k in "xyz")
        assert with_n.array[c] - without.array[c] > 200
        assert without.masks["lung"][c]
        assert 4.0 <= n["radius_mm"] <= 15.0
    assert changed.any() and not (changed & ~near).any()


# -- brain MRI ----------------------------------------------------------------------------


def test_brain_factors_follow_atrophy():
    ph = [brain(32, s) for s in range(10)]
    atrophy = [p.factors["atrophy"] for p in ph]
    vent = [p.factors["ventricle_volume_ml"] for p in ph]
    brain_ml = [p.factors["brain_volume_ml"] for p in ph]
    icv = [p.factors["intracranial_volume_ml"] for p in ph]
    assert corr(atrophy, vent) > 0.8
    assert corr(atrophy, np.divide(brain_ml, icv)) < -0.9
    assert corr(atrophy, brain_ml) < 0
    for p in ph:
        f = p.factors
        assert f["label"] == int(np.digitize(f["atrophy"], [0.25, 0.5, 0.75]))
        assert f["brain_volume_ml"] == pytest.approx(f["gm_volume_ml"] + f["wm_volume_ml"], abs=0.01)
        voxel_ml = float(np.prod(p.spacing)) / 1000.0
        # the boolean masks agree with the partial-volume sums
        assert p.masks["brain"].sum() * voxel_ml == pytest.approx(f["brain_volume_ml"], rel=0.1)
        assert 900 < f["brain_volume_ml"] < 2000 and 5 < f["ventricle_volume_ml"] < 200


def test_brain_intensities_are_t1_like():
    p = brain(48, 1)
    v, m = p.array, p.masks
    wm, gm = np.median(v[m["wm"]]), np.median(v[m["gm"]])
    vent = np.median(v[ndimage.binary_erosion(m["ventricles"])]) if m["ventricles"].sum() > 30 else None
    background = np.median(v[~ndimage.binary_dilation(m["intracranial"], iterations=2)])
    assert v.min() >= 0
    assert wm > 1.1 * gm
    if vent is not None:
        assert vent < 0.6 * gm
    assert background < 0.1 * wm


def test_brain_phantom_is_the_mni_template_in_world_space():
    # independent check of orientation and placement: resample the shipped template
    # onto the phantom's grid through the affines and correlate
    import importlib.util

    folder = Path(next(iter(importlib.util.find_spec("nilearn").submodule_search_locations)))
    tpl = nib.load(str(folder / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    p = brain(32, 2)
    vox = np.indices(p.array.shape).reshape(3, -1)
    world = p.affine[:3, :3] @ vox + p.affine[:3, 3:4]
    src = np.linalg.inv(tpl.affine)[:3, :3] @ world + np.linalg.inv(tpl.affine)[:3, 3:4]
    ref = ndimage.map_coordinates(np.asarray(tpl.dataobj, np.float32), src, order=1).reshape(p.array.shape)
    right = corr(ref.ravel(), p.array.ravel())
    assert right > 0.88
    # an anterior-posterior or inferior-superior flip would match clearly worse
    for flipped in (ref[:, ::-1, :], ref[:, :, ::-1]):
        assert corr(flipped.ravel(), p.array.ravel()) < min(0.85, right - 0.08)


# -- command line --------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    from medgen.commands import phantoms

    parser = argparse.ArgumentParser()
    phantoms.add_parser(parser.add_subparsers())
    args = parser.parse_args(["phantoms", *argv])
    return args.func(args)


def read_manifest(folder: Path) -> list[dict]:
    with (folder / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_volumes_manifest_and_mosaic(tmp_path):
    out = tmp_path / "ct"
    assert run_cli("--kind", "thorax-ct", "--n", "3", "--size", "16", "--seed", "5", "--out", str(out)) == 0
    rows = read_manifest(out)
    assert [r["id"] for r in rows] == [f"thorax-ct-{i:04d}" for i in range(3)]
    assert list(rows[0])[:4] == ["id", "file", "kind", "label"]
    for i, row in enumerate(rows):
        img = nib.load(str(out / row["file"]))
        assert img.header.get_data_dtype() == np.int16
        assert img.header.get_zooms() == (25.0, 25.0, 25.0)
        assert np.allclose(img.affine[:3, :3], np.diag([25.0] * 3))
        ph = generate("thorax-ct", 16, volume_seed(5, i))
        assert np.array_equal(np.asarray(img.dataobj), ph.array.astype(np.int16))
        assert float(row["lung_volume_ml"]) == pytest.approx(ph.factors["lung_volume_ml"])
        assert int(row["label"]) == ph.factors["label"]
    meta = json.loads((out / "phantoms.json").read_text())
    assert (meta["kind"], meta["n"], meta["size"], meta["seed"]) == ("thorax-ct", 3, 16, 5)
    import matplotlib.image

    from medgen.viz.mosaic import mosaic_array

    png = matplotlib.image.imread(out / "mosaic.png")
    vols = [np.asarray(nib.load(str(out / r["file"])).dataobj) for r in rows]
    expected = mosaic_array(vols, vmin=-1000, vmax=250)  # rows = volumes, columns = planes
    scale = png.shape[0] // expected.shape[0]
    assert png.shape[:2] == (scale * expected.shape[0], scale * expected.shape[1])
    # away from the labels, the grey levels are the mosaic's (lungs dark, body bright)
    centre = png[scale * 8 : scale * 9, scale * 8 : scale * 9, 0]
    assert abs(float(centre.mean()) - float(expected[8, 8])) < 0.02

    # a smaller set is a prefix of the larger one; rewriting a phantom set removes stale volumes
    assert run_cli("--kind", "thorax-ct", "--n", "2", "--size", "16", "--seed", "5", "--out", str(out)) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["thorax-ct-0000.nii.gz", "thorax-ct-0001.nii.gz"]
    again = np.asarray(nib.load(str(out / "thorax-ct-0001.nii.gz")).dataobj)
    assert np.array_equal(again, generate("thorax-ct", 16, volume_seed(5, 1)).array.astype(np.int16))
    assert len(read_manifest(out)) == 2


def test_cli_brain_mri_with_workers(tmp_path):
    out = tmp_path / "mr"
    assert run_cli("--kind", "brain-mri", "--n", "2", "--size", "16", "--out", str(out), "--workers", "2") == 0
    rows = read_manifest(out)
    assert [r["file"] for r in rows] == ["brain-mri-0000.nii.gz", "brain-mri-0001.nii.gz"]
    img = nib.load(str(out / rows[1]["file"]))
    assert img.header.get_data_dtype() == np.float32 and img.header.get_zooms() == (12.5, 12.5, 12.5)
    assert np.array_equal(np.asarray(img.dataobj), generate("brain-mri", 16, volume_seed(0, 1)).array)
    assert {"atrophy", "brain_volume_ml", "ventricle_volume_ml"} <= set(rows[0])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kind", "knee-ct"], "unknown phantom kind"),
        (["--kind", "thorax-ct", "--n", "0"], "--n"),
        (["--kind", "thorax-ct", "--size", "8"], "--size must be an integer between 16 and 512, got 8"),
        (["--kind", "thorax-ct", "--size", "513"], "--size must be an integer between 16 and 512"),
        (["--kind", "thorax-ct", "--shape", "64,64"], "--shape must be three integers"),
        (["--kind", "thorax-ct", "--shape", "64,64,8"], "--shape must be three integers X,Y,Z, each between 16"),
        (["--kind", "thorax-ct", "--shape", "64,64,x"], "--shape must be three integers"),
        (["--kind", "thorax-ct", "--size", "32", "--shape", "32,32,32"], "--size and --shape"),
        (["--kind", "thorax-ct", "--spacing", "1,2"], "--spacing must be one or three voxel sizes"),
        (["--kind", "thorax-ct", "--spacing", "0.8,0.8,0"], "--spacing must be one or three voxel sizes SX,SY,SZ"),
        (["--kind", "thorax-ct", "--spacing", "nan"], "--spacing must be one or three voxel sizes SX,SY,SZ"),
        (["--kind", "brain-mri", "--nodules"], "--nodules"),
    ],
)
def test_cli_usage_errors(tmp_path, argv, message):
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        run_cli(*argv, "--out", str(tmp_path / "x"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_cli_refuses_to_mix_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        run_cli("--kind", "thorax-ct", "--n", "1", "--size", "16", "--out", str(tmp_path))
    assert run_cli("--kind", "thorax-ct", "--n", "1", "--size", "16", "--out", str(tmp_path), "--overwrite") == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "thorax-ct-0000.nii.gz").exists()
