"""The healthy self of a brain phantom: the same subject and scan (noise included) at atrophy 0, so that
image - healthy is the effect of the atrophy alone."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from medgen.core.errors import UsageError
from medgen.data.dataset import VolumeDataset
from medgen.data.phantoms import brain_mri, deformation, generate, phantom_set, volume_seed, volume_specs
from medgen.data.preprocess import PreprocessSettings, preprocess_folder
from phantom_sets import digests, load, read_manifest, run_phantoms

torch.set_num_threads(1)

BG, CSF, GM, WM, VENT = (brain_mri.BACKGROUND, brain_mri.CSF, brain_mri.GREY_MATTER, brain_mri.WHITE_MATTER,
                         brain_mri.VENTRICLES)


@lru_cache(maxsize=None)
def brain(size, seed, healthy=True, longitudinal=False, displacement=False):
    return generate("brain-mri", size, seed, healthy=healthy, longitudinal=longitudinal, displacement=displacement)


@pytest.fixture
def template_maps(monkeypatch):
    """Records the template maps each brain phantom is built from (at its voxels, before atrophy)."""
    calls: list[tuple[np.ndarray, ...]] = []
    sample = brain_mri._sample_template

    def spy(q, spacing):
        maps = sample(q, spacing)
        calls.append(maps)
        return maps

    monkeypatch.setattr(brain_mri, "_sample_template", spy)
    return calls


def fractions(maps: tuple[np.ndarray, ...], atrophy: float, vent_base: float) -> tuple[np.ndarray, ...]:
    """(t1 tissue signal, gm, wm, ventricles, csf) of the anatomy at ``atrophy``, as the phantom computes it."""
    return brain_mri._atrophied(*maps, atrophy, vent_base)[:5]


# -- the healthy self ------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 2, 5])
def test_image_equals_healthy_exactly_where_the_atrophy_leaves_the_tissue_unchanged(index, template_maps):
    seed = volume_seed(0, index)
    ph = generate("brain-mri", 32, seed, healthy=True)
    par = brain_mri.subject_parameters(seed)
    (maps,) = template_maps
    subject = fractions(maps, par["atrophy"], par["ventricle_offset_mm"])
    healthy = fractions(maps, 0.0, par["ventricle_offset_mm"])
    # the partial-volume fractions (gm, wm, ventricles, csf) the atrophy leaves unchanged
    same = np.all([a == b for a, b in zip(subject[1:], healthy[1:])], axis=0)
    assert 0.5 < same.mean() < 0.95
    # there the signals are equal and so, with the same noise realisation, are the images (T1 and T2)
    assert np.array_equal(subject[0][same], healthy[0][same])
    assert np.array_equal(ph.array[same], ph.volumes["healthy"][same])
    assert np.array_equal(ph.volumes["t2"][same], ph.volumes["healthy_t2"][same])
    # elsewhere the atrophy shows: most changed voxels differ, lost grey matter darkens T1 and brightens T2
    assert np.mean(ph.array[~same] != ph.volumes["healthy"][~same]) > 0.7
    # (the same noise on a lower signal gives a lower magnitude unless the noise flips the sign: a few voxels)
    lost = (healthy[1] - subject[1]) > 0.1
    assert lost.sum() > 100
    assert np.mean(ph.array[lost] < ph.volumes["healthy"][lost]) > 0.95
    assert np.mean(ph.volumes["t2"][lost] > ph.volumes["healthy_t2"][lost]) > 0.95
    # black box: deep in the white matter of both tissue maps, far from cortex and ventricles, image == healthy
    deep = ndi.binary_erosion((ph.volumes["tissue"] == WM) & (ph.volumes["healthy_tissue"] == WM))
    assert deep.sum() > 200 and np.array_equal(ph.array[deep], ph.volumes["healthy"][deep])
    # the healthy tissue map and volumes are those of the atrophy-0 fractions
    ml = float(np.prod(ph.spacing)) / 1000.0
    gm_h, wm_h, vent_h = (f.sum(dtype=np.float64) * ml for f in healthy[1:4])
    assert ph.factors["gm_volume_ml_healthy"] == pytest.approx(gm_h, rel=1e-12)
    assert ph.factors["wm_volume_ml_healthy"] == pytest.approx(wm_h, rel=1e-12)
    assert ph.factors["ventricle_volume_ml_healthy"] == pytest.approx(vent_h, rel=1e-12)
    assert np.array_equal(ph.volumes["healthy_tissue"] == VENT, healthy[3] >= 0.5)


@pytest.mark.parametrize("index", [0, 2, 3, 4])  # atrophy 0.45, 0.90, 0.94, 0.94
def test_healthy_self_has_more_grey_matter_and_smaller_ventricles(index):
    ph = brain(32, volume_seed(0, index))
    f = ph.factors
    assert f["atrophy"] > 0.3
    # the recorded volumes
    assert f["ventricle_volume_ml_healthy"] < f["ventricle_volume_ml"] - 2.0
    assert f["gm_volume_ml_healthy"] > f["gm_volume_ml"] + 20.0
    assert f["wm_volume_ml_healthy"] >= f["wm_volume_ml"]
    assert f["brain_volume_ml_healthy"] == pytest.approx(f["gm_volume_ml_healthy"] + f["wm_volume_ml_healthy"])
    # the tissue maps differ only where the atrophy acts: cortex turned CSF, tissue turned ventricle
    subject, healthy = ph.volumes["tissue"], ph.volumes["healthy_tissue"]
    changed = subject != healthy
    assert changed.sum() > 100
    assert set(np.unique(subject[changed])) <= {CSF, WM, VENT}  # WM: a voxel whose cortex part became CSF
    assert set(np.unique(healthy[changed])) <= {CSF, GM, WM}
    assert np.all(healthy[changed & (subject == WM)] == GM)
    assert np.array_equal(subject > BG, healthy > BG)  # the same intracranial volume
    assert np.all(subject[healthy == VENT] == VENT)  # the healthy ventricles lie inside the subject's
    assert np.all(healthy[subject == GM] == GM)  # atrophy creates no grey matter
    ml = float(np.prod(ph.spacing)) / 1000.0
    assert (np.sum(healthy == VENT) - np.sum(subject == VENT)) * ml < -2.0
    assert (np.sum(healthy == GM) - np.sum(subject == GM)) * ml > 20.0


def test_healthy_self_is_the_atrophy_free_template_warped_with_the_subjects_field():
    seed = volume_seed(0, 2)  # atrophy 0.90
    ph = brain(32, seed, displacement=True)
    par = brain_mri.subject_parameters(seed)
    u, affine = deformation.field_of(ph)

    def warped(atrophy: float) -> np.ndarray:
        tpl = brain_mri.template(100, atrophy=atrophy, ventricle_offset_mm=par["ventricle_offset_mm"],
                                 filter_spacing=ph.spacing)
        return deformation.warp(tpl.volumes["tissue"], tpl.affine, u, affine, order=0)

    def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
        x, y = a == label, b == label
        return float(2 * (x & y).sum() / (x.sum() + y.sum()))

    young, old = warped(0.0), warped(par["atrophy"])
    healthy = ph.volumes["healthy_tissue"]
    for label in (GM, VENT):
        assert dice(young, healthy, label) > 0.9, label
        assert dice(young, healthy, label) > dice(old, healthy, label) + 0.02, label


def test_the_healthy_self_changes_nothing_else():
    seed = volume_seed(0, 5)
    full = brain(24, seed, healthy=True, longitudinal=True, displacement=True)
    plain = brain(24, seed, healthy=False)
    assert np.array_equal(full.array, plain.array)
    for name in plain.volumes:
        assert np.array_equal(full.volumes[name], plain.volumes[name]), name
    assert {k: full.factors[k] for k in plain.factors} == plain.factors
    assert list(full.factors)[len(plain.factors):] == [*brain_mri.LONGITUDINAL_FACTORS, *brain_mri.HEALTHY_FACTORS]
    assert set(full.volumes) == {"tissue", "t2", *brain_mri.LONGITUDINAL_VOLUMES, *brain_mri.HEALTHY_VOLUMES,
                                 *deformation.DISPLACEMENT_VOLUMES}
    # with or without the follow-up, the same healthy self
    alone = brain(24, seed, healthy=True)
    for name in brain_mri.HEALTHY_VOLUMES:
        assert np.array_equal(alone.volumes[name], full.volumes[name]), name
    with pytest.raises(ValueError, match="healthy self cannot have lesions"):
        generate("brain-mri", 16, seed, lesions=("wmh",), healthy=True)
    with pytest.raises(ValueError, match="healthy selves are only available for brain-mri"):
        generate("thorax-ct", 16, 0, healthy=True)


# -- sets: default output, manifest, domain B, preprocess, CLI ---------------------------------------------


def test_default_output_is_unchanged_and_the_option_only_adds(tmp_path):
    common = ("--kind", "brain-mri", "--n", "2", "--size", "16", "--seed", "6")
    assert run_phantoms(*common, "--out", str(tmp_path / "plain")) == 0
    assert run_phantoms(*common, "--healthy", "--out", str(tmp_path / "healthy")) == 0
    plain, full = digests(tmp_path / "plain"), digests(tmp_path / "healthy")
    assert set(full) - set(plain) == {f"{name}/brain-mri-{i:04d}.nii.gz" for name in phantom_set.HEALTHY_VOLUME_NAMES
                                      for i in range(2)}
    assert all(full[name] == digest for name, digest in plain.items())
    rows, full_rows = read_manifest(tmp_path / "plain"), read_manifest(tmp_path / "healthy")
    for row, full_row in zip(rows, full_rows):
        assert {k: full_row[k] for k in row} == row
    assert list(full_rows[0])[len(rows[0]) - 2:] == [*brain_mri.HEALTHY_FACTORS, "tissue", "t2", "healthy",
                                                     "healthy_tissue", "healthy_t2"]
    meta = json.loads((tmp_path / "plain" / "phantoms.json").read_text())
    assert "healthy" not in meta and list(meta["volumes"]) == ["tissue", "t2"]
    meta = json.loads((tmp_path / "healthy" / "phantoms.json").read_text())
    assert meta["healthy"]["columns"] == list(brain_mri.HEALTHY_FACTORS)
    assert "noise realisation" in meta["healthy"]["healthy"]
    assert meta["volumes"]["healthy"]["units"].startswith("T1")
    assert meta["volumes"]["healthy_tissue"]["dtype"] == "int16"
    assert meta["volumes"]["healthy_tissue"]["classes"] == meta["volumes"]["tissue"]["classes"]
    # a smaller set written over it without the option removes the healthy selves
    assert run_phantoms("--kind", "brain-mri", "--n", "1", "--size", "16", "--seed", "6",
                        "--out", str(tmp_path / "healthy")) == 0
    assert not (tmp_path / "healthy" / "healthy").exists()


def test_manifest_volumes_are_the_healthy_fractions(tmp_path, template_maps):
    out = tmp_path / "set"
    assert run_phantoms("--kind", "brain-mri", "--n", "2", "--size", "20", "--seed", "3", "--healthy",
                        "--out", str(out)) == 0
    assert len(template_maps) == 2  # one subject per volume, in order
    for i, (row, maps) in enumerate(zip(read_manifest(out), template_maps)):
        par = brain_mri.subject_parameters(volume_seed(3, i))
        vent = fractions(maps, 0.0, par["ventricle_offset_mm"])[3]
        tissue = load(out / row["healthy_tissue"])
        ml = float(np.prod(nib.load(str(out / row["file"])).header.get_zooms())) / 1000.0
        factor = float(row["ventricle_volume_ml_healthy"])
        # the factor is the sum of the partial-volume ventricle fractions ...
        assert factor == pytest.approx(vent.sum(dtype=np.float64) * ml, rel=1e-9)
        # ... the label map counts the voxels at least half ventricle: each voxel 0 < f < 1 changes the count
        # by at most half a voxel against the sum, so they agree to within half the partial voxels
        count = np.sum(tissue == VENT) * ml
        partial = np.sum((vent > 0) & (vent < 1)) * ml
        assert count > 0 and abs(count - factor) <= 0.5 * partial
        assert float(row["ventricle_volume_ml_healthy"]) < float(row["ventricle_volume_ml"])


def test_domain_b_healthy_is_in_t2(tmp_path):
    out = tmp_path / "b"
    assert run_phantoms("--kind", "brain-mri", "--n", "1", "--size", "16", "--seed", "2", "--domain", "B",
                        "--healthy", "--out", str(out)) == 0
    row = read_manifest(out)[0]
    ph = brain(16, volume_seed(2, 0))
    assert "healthy_t2" not in row and "t2" not in row
    assert np.array_equal(load(out / row["healthy"]), ph.volumes["healthy_t2"])
    assert np.array_equal(load(out / row["healthy_tissue"]), ph.volumes["healthy_tissue"])
    assert np.array_equal(load(out / row["file"]), ph.volumes["t2"])
    meta = json.loads((out / "phantoms.json").read_text())
    assert meta["volumes"]["healthy"]["units"].startswith("T2") and "healthy_t2" not in meta["volumes"]


def test_preprocess_carries_the_healthy_self(tmp_path):
    src = tmp_path / "set"
    assert run_phantoms("--kind", "brain-mri", "--n", "2", "--size", "20", "--seed", "1", "--healthy",
                        "--out", str(src)) == 0
    summary = preprocess_folder(src, tmp_path / "data", PreprocessSettings(modality="mri", size=16),
                                progress=False, log=lambda msg: None)
    assert not summary.failed
    info = json.loads((tmp_path / "data" / "preprocess.json").read_text())
    assert set(info["volumes"]) == {"image", "tissue", "t2", "healthy", "healthy_tissue", "healthy_t2"}
    assert info["volumes"]["healthy"]["kind"] == "intensity" and info["volumes"]["healthy_tissue"]["kind"] == "label"
    for item in VolumeDataset(tmp_path / "data", split="all", keys=("image", "healthy", "tissue", "healthy_tissue")):
        subject, healthy = item["tissue"][0].numpy(), item["healthy_tissue"][0].numpy()
        assert np.all(subject[healthy == VENT] == VENT) and (healthy == VENT).sum() < (subject == VENT).sum()
        assert np.array_equal(subject > 0, healthy > 0)
        assert item["healthy"].shape == item["image"].shape


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kind", "thorax-ct", "--healthy"], "--healthy is only available for --kind brain-mri"),
        (["--kind", "brain-mri", "--healthy", "--lesions", "wmh"],
         "--healthy cannot be combined with --lesions (image - healthy is the effect of atrophy alone)"),
    ],
)
def test_cli_usage_errors(tmp_path, argv, message):
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        run_phantoms(*argv, "--out", str(tmp_path / "x"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_the_light_copies_agree():
    assert phantom_set.HEALTHY_VOLUME_NAMES == brain_mri.HEALTHY_VOLUMES
    for domain in ("A", "B", "both"):
        for longitudinal in (False, True):
            assert phantom_set.volume_names("brain-mri", domain, False, longitudinal, True) == tuple(
                volume_specs("brain-mri", domain, False, longitudinal, True))
