"""Registration and disease-progression ground truth of the brain phantoms: the displacement to
the template (and its composition between subjects), and longitudinal baseline/follow-up pairs."""

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
from medgen.data.phantoms import brain_mri, deformation, generate, phantom_set, volume_seed, volume_specs
from medgen.data.preprocess import PreprocessSettings, preprocess_folder
from phantom_sets import digests, load, read_manifest, run_phantoms

torch.set_num_threads(1)

DISP = deformation.DISPLACEMENT_VOLUMES
FOREGROUND = (brain_mri.CSF, brain_mri.GREY_MATTER, brain_mri.WHITE_MATTER, brain_mri.VENTRICLES)


@lru_cache(maxsize=None)
def brain(size, seed, spacing=None, displacement=True, longitudinal=False):
    return generate("brain-mri", size, seed, spacing=spacing, displacement=displacement, longitudinal=longitudinal)


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    return float(2 * (x & y).sum() / (x.sum() + y.sum()))


def foreground_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-class Dice over the intracranial classes: agreeing labelled voxels over all labelled voxels."""
    fa, fb = a > 0, b > 0
    return float(2 * ((a == b) & fa).sum() / (fa.sum() + fb.sum()))


def points(grid: np.ndarray) -> np.ndarray:
    return grid.reshape(3, -1).T


# -- the displacement to the template -----------------------------------------------------------


@pytest.mark.parametrize("size, spacing", [(32, None), ((24, 20, 16), (8.0, 9.0, 11.0))])
def test_field_is_the_subject_map_sampled_at_the_voxel_centres(size, spacing):
    seed = volume_seed(0, 2)
    ph = brain(size, seed, spacing)
    u, affine = deformation.field_of(ph)
    assert u.shape == (3, *ph.array.shape) and all(ph.volumes[n].dtype == np.float32 for n in DISP)
    assert np.allclose(affine, ph.affine)
    x = deformation.world_grid(ph.array.shape, ph.affine)
    q = brain_mri.subject_map(seed).to_template(points(x)).T.reshape(x.shape)
    # q = affine (i, j, k, 1) + disp, in template (MNI) mm: the analytic map, to float32 precision
    assert np.abs(q - (x + u)).max() < 1e-3
    assert np.abs(deformation.template_points(ph) - q).max() < 1e-3
    # a few mm of scale, rotation, shift and warp: never zero, never wild
    magnitude = np.linalg.norm(u, axis=0)
    assert 2.0 < magnitude.max() < 30.0 and magnitude.mean() > 1.0
    # the inverse map returns the voxel centres
    back = brain_mri.subject_map(seed).from_template(points(x + u)).T.reshape(x.shape)
    assert np.abs(back - x).max() < 1e-3


@pytest.mark.parametrize("index", [0, 1, 2])
def test_template_tissue_warped_with_the_field_reproduces_the_subject(index):
    seed = volume_seed(0, index)
    ph = brain(32, seed)
    par = brain_mri.subject_parameters(seed)
    assert round(par["atrophy"], 4) == ph.factors["atrophy"]
    # the template at 2 mm with the subject's atrophy (a tissue change in template space) and level of detail
    tpl = brain_mri.template(100, atrophy=par["atrophy"], ventricle_offset_mm=par["ventricle_offset_mm"],
                             filter_spacing=ph.spacing)
    u, affine = deformation.field_of(ph)
    warped = deformation.warp(tpl.volumes["tissue"], tpl.affine, u, affine, order=0)
    assert warped.dtype == np.int16
    truth = ph.volumes["tissue"]
    assert foreground_dice(warped, truth) > 0.9
    for label in (brain_mri.GREY_MATTER, brain_mri.WHITE_MATTER, brain_mri.VENTRICLES):
        assert dice(warped, truth, label) > 0.9, label
    assert dice(warped > 0, truth > 0, True) > 0.97  # intracranial volume
    # without the field (the template where the subject is) the agreement is far worse
    identity = deformation.warp(tpl.volumes["tissue"], tpl.affine, np.zeros_like(u), affine, order=0)
    assert foreground_dice(identity, truth) < foreground_dice(warped, truth) - 0.1


def test_template_is_the_zero_displacement_subject():
    tpl = brain_mri.template(32)
    ph = brain(32, volume_seed(0, 0))
    assert np.allclose(tpl.affine, ph.affine) and tpl.array.shape == ph.array.shape
    assert set(np.unique(tpl.volumes["tissue"])) == set(brain_mri.TISSUE_CLASSES)
    assert tpl.factors["atrophy"] == 0.0 and tpl.factors["label"] == 0
    # median white matter of the noise-free template T1 is 1000
    assert abs(np.median(tpl.array[tpl.volumes["tissue"] == brain_mri.WHITE_MATTER]) - 1000.0) < 100.0
    # atrophy in template space: more CSF, bigger ventricles, less grey matter
    old = brain_mri.template(32, atrophy=1.0)
    assert old.factors["ventricle_volume_ml"] > tpl.factors["ventricle_volume_ml"] + 5.0
    assert old.factors["gm_volume_ml"] < tpl.factors["gm_volume_ml"] - 20.0
    assert old.factors["intracranial_volume_ml"] == tpl.factors["intracranial_volume_ml"]


# -- between two subjects ---------------------------------------------------------------------------


def test_composed_fields_give_the_true_correspondence_between_subjects():
    a_seed, b_seed = volume_seed(0, 0), volume_seed(0, 1)
    a, b = brain(32, a_seed), brain(32, b_seed)
    d = deformation.true_displacement(moving=a, fixed=b)
    assert d.shape == (3, 32, 32, 32) and d.dtype == np.float32
    # by definition x_B + d lands where A was sampled from the same template point as x_B
    x = deformation.world_grid(b.array.shape, b.affine)
    in_brain = b.volumes["tissue"] > 0
    q_b = brain_mri.subject_map(b_seed).to_template(points(x))
    q_a = brain_mri.subject_map(a_seed).to_template(points(x + d))
    error = np.linalg.norm(q_a - q_b, axis=1).reshape(in_brain.shape)
    assert error[in_brain].max() < 0.3  # mm: the field of A linearly interpolated at 6.25 mm voxels
    assert np.median(error) < 0.05
    # A's labels warped onto B match B's far better than identity
    warped = deformation.warp(a.volumes["tissue"], a.affine, d, b.affine, order=0)
    truth, identity = b.volumes["tissue"], a.volumes["tissue"]
    assert foreground_dice(warped, truth) > 0.75
    assert foreground_dice(warped, truth) > foreground_dice(identity, truth) + 0.15
    for label in (brain_mri.GREY_MATTER, brain_mri.WHITE_MATTER):
        assert dice(warped, truth, label) > 0.8 > dice(identity, truth, label) + 0.1
    # a subject onto itself: zero
    assert np.abs(deformation.true_displacement(b, b)).max() < 1e-3
    # B -> A -> B is the identity: y = x_B + d, then y + d_BA(y) (d_BA on A's grid, sampled at y) = x_B
    back = deformation.true_displacement(moving=b, fixed=a)
    sampled = np.stack([deformation.warp(back[i], a.affine, d, b.affine, order=1) for i in range(3)])
    assert np.median(np.linalg.norm(d + sampled, axis=0)[in_brain]) < 0.1


def test_written_fields_compose_like_the_phantoms(tmp_path):
    out = tmp_path / "set"
    assert run_phantoms("--kind", "brain-mri", "--n", "2", "--size", "24", "--seed", "4", "--displacement",
                        "--out", str(out)) == 0
    rows = read_manifest(out)
    meta = json.loads((out / "phantoms.json").read_text())
    assert list(meta["displacement"]["volumes"]) == list(DISP)
    assert not set(DISP) & set(meta["volumes"])  # not declared for preprocess: it cannot carry mm
    fields = [deformation.read_displacement(out, row["id"]) for row in rows]
    for i, (row, (u, affine)) in enumerate(zip(rows, fields)):
        ph = brain(24, volume_seed(4, i))
        assert [row[n] for n in DISP] == [f"{n}/{row['id']}.nii.gz" for n in DISP]
        assert np.array_equal(u, deformation.field_of(ph)[0]) and np.allclose(affine, ph.affine)
        assert np.allclose(nib.load(str(out / row["file"])).affine, affine)
    from_files = deformation.true_displacement(fields[0], fields[1])
    from_phantoms = deformation.true_displacement(brain(24, volume_seed(4, 0)), brain(24, volume_seed(4, 1)))
    assert np.abs(from_files - from_phantoms).max() < 1e-4
    with pytest.raises(ValueError, match="displacement=True"):
        deformation.field_of(brain(24, volume_seed(4, 0), displacement=False))
    with pytest.raises(ValueError, match="missing; was the set written with --displacement"):
        deformation.read_displacement(out, "brain-mri-0009")


# -- longitudinal pairs -------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_followup_has_more_atrophy_by_the_recorded_amounts(index):
    seed = volume_seed(0, index)
    ph = brain(32, seed, displacement=False, longitudinal=True)
    f = ph.factors
    lo, hi = brain_mri.FOLLOWUP_YEARS
    assert lo <= f["interval_years"] <= hi
    assert brain_mri.ATROPHY_RATE_PER_YEAR[0] <= f["atrophy_rate_per_year"] <= brain_mri.ATROPHY_RATE_PER_YEAR[1]
    expected = f["atrophy"] + f["atrophy_rate_per_year"] * f["interval_years"]
    assert f["atrophy_followup"] == pytest.approx(expected, abs=1e-3)
    assert f["label_followup"] == brain_mri.atrophy_class(f["atrophy_followup"]) >= f["label"]
    par = brain_mri.subject_parameters(seed)
    assert f["interval_years"] == round(par["interval_years"], 4)
    assert f["atrophy_followup"] == round(par["atrophy_followup"], 4)
    # the recorded volumes: bigger ventricles, less grey matter and brain, the same intracranial volume
    dv = f["ventricle_volume_ml_followup"] - f["ventricle_volume_ml"]
    dg = f["gm_volume_ml_followup"] - f["gm_volume_ml"]
    assert dv > 1.0 and dg < -5.0
    assert f["brain_volume_ml_followup"] < f["brain_volume_ml"] and f["wm_volume_ml_followup"] <= f["wm_volume_ml"]
    # measured on the tissue maps
    base, follow = ph.volumes["tissue"], ph.volumes["followup_tissue"]
    ml = float(np.prod(ph.spacing)) / 1000.0
    dv_map = ml * (np.sum(follow == brain_mri.VENTRICLES) - np.sum(base == brain_mri.VENTRICLES))
    dg_map = ml * (np.sum(follow == brain_mri.GREY_MATTER) - np.sum(base == brain_mri.GREY_MATTER))
    assert abs(dv_map - dv) < 0.2 * dv + 1.0
    # the grey-matter label count overstates the loss of grey-matter fraction (partial volume at the cortex)
    assert 0.8 * dg > dg_map > 2.5 * dg
    # atrophy only turns tissue into CSF: ventricles only grow, nothing becomes grey matter, same intracranium
    assert np.all(follow[base == brain_mri.VENTRICLES] == brain_mri.VENTRICLES)
    assert not np.any((follow == brain_mri.GREY_MATTER) & (base != brain_mri.GREY_MATTER))
    assert np.array_equal(follow > 0, base > 0)
    # same scanner, new noise: in the background both are the Rician floor, but drawn independently
    background = base == 0
    diff = (ph.volumes["followup"] - ph.array)[background]
    assert np.any(diff != 0) and abs(diff.mean()) < 0.05 * diff.std()
    # the grey matter turned to CSF darkens on T1 and brightens on T2
    lost = (base == brain_mri.GREY_MATTER) & (follow == brain_mri.CSF)
    assert lost.sum() > 10
    assert np.mean(ph.volumes["followup"][lost]) < np.mean(ph.array[lost])
    assert np.mean(ph.volumes["followup_t2"][lost]) > np.mean(ph.volumes["t2"][lost])


def test_followup_shares_the_baseline_field_and_everything_else():
    seed = volume_seed(0, 5)
    both = brain(24, seed, displacement=True, longitudinal=True)
    plain = brain(24, seed, displacement=False, longitudinal=False)
    for name in ("tissue", "t2"):
        assert np.array_equal(both.volumes[name], plain.volumes[name])
    assert np.array_equal(both.array, plain.array)
    assert {k: both.factors[k] for k in plain.factors} == plain.factors
    assert list(both.factors)[len(plain.factors):] == list(brain_mri.LONGITUDINAL_FACTORS)
    assert set(both.volumes) == {"tissue", "t2", *brain_mri.LONGITUDINAL_VOLUMES, *DISP}
    with pytest.raises(ValueError, match="lesion progression is not modelled"):
        generate("brain-mri", 16, seed, lesions=("wmh",), longitudinal=True)


# -- sets: default output, determinism, CLI ------------------------------------------------------------


def test_default_output_is_unchanged(tmp_path):
    common = ("--kind", "brain-mri", "--n", "2", "--size", "20", "--seed", "6")
    assert run_phantoms(*common, "--out", str(tmp_path / "plain")) == 0
    assert run_phantoms(*common, "--displacement", "--longitudinal", "--out", str(tmp_path / "full")) == 0
    plain, full = digests(tmp_path / "plain"), digests(tmp_path / "full")
    # the new options only add files: the image, tissue and t2 files are byte for byte the same
    assert set(plain) < set(full) and all(full[name] == digest for name, digest in plain.items())
    rows = read_manifest(tmp_path / "plain")
    assert list(rows[0]) == ["id", "file", "kind", "label", "brain_volume_ml", "gm_volume_ml", "wm_volume_ml",
                             "ventricle_volume_ml", "intracranial_volume_ml", "atrophy", "tissue", "t2"]
    meta = json.loads((tmp_path / "plain" / "phantoms.json").read_text())
    assert "displacement" not in meta and "longitudinal" not in meta and list(meta["volumes"]) == ["tissue", "t2"]
    # the same subjects as before these options existed (fingerprints of volume 0 at 20^3, seed 6)
    ph = brain(20, volume_seed(6, 0), displacement=False)
    assert np.bincount(ph.volumes["tissue"].ravel(), minlength=5).tolist() == FINGERPRINT["tissue"]
    assert float(ph.array.sum(dtype=np.float64)) == pytest.approx(FINGERPRINT["image_sum"], rel=1e-6)
    assert ph.factors["atrophy"] == FINGERPRINT["atrophy"]
    full_rows = read_manifest(tmp_path / "full")
    assert list(full_rows[0])[: len(rows[0]) - 2] == list(rows[0])[:-2]
    assert list(full_rows[0])[-len(DISP):] == list(DISP)
    for row, full_row in zip(rows, full_rows):
        assert {k: full_row[k] for k in row} == row


#: Volume 0 of seed 6 at 20^3 as generated before the registration options existed.
FINGERPRINT = {"tissue": [5987, 194, 1173, 619, 27], "image_sum": 1628693.7074262202, "atrophy": 0.5539}


def test_volume_i_is_the_same_for_any_n_and_seed_determines_everything(tmp_path):
    opts = ("--kind", "brain-mri", "--size", "16", "--seed", "8", "--displacement", "--longitudinal")
    assert run_phantoms(*opts, "--n", "2", "--out", str(tmp_path / "two")) == 0
    assert run_phantoms(*opts, "--n", "3", "--out", str(tmp_path / "three")) == 0
    two, three = digests(tmp_path / "two"), digests(tmp_path / "three")
    assert len(two) == 2 * 9 and two == {k: v for k, v in three.items() if k in two}
    assert read_manifest(tmp_path / "two") == read_manifest(tmp_path / "three")[:2]
    # the same seed, the same arrays
    a = generate("brain-mri", 16, volume_seed(8, 1), displacement=True, longitudinal=True)
    b = generate("brain-mri", 16, volume_seed(8, 1), displacement=True, longitudinal=True)
    assert all(np.array_equal(a.volumes[k], b.volumes[k]) for k in a.volumes) and a.factors == b.factors
    row = read_manifest(tmp_path / "three")[1]
    for name in ("followup", "followup_tissue", "followup_t2", *DISP):
        assert np.array_equal(load(tmp_path / "three" / row[name]), a.volumes[name])
    assert float(row["interval_years"]) == a.factors["interval_years"]
    # a smaller set written over a bigger one removes the extra volumes' files
    assert run_phantoms(*opts[:-2], "--n", "2", "--out", str(tmp_path / "three")) == 0
    assert not (tmp_path / "three" / "disp_x").exists() and not (tmp_path / "three" / "followup").exists()


def test_domain_b_followup_is_in_t2(tmp_path):
    out = tmp_path / "b"
    assert run_phantoms("--kind", "brain-mri", "--n", "1", "--size", "16", "--seed", "2", "--domain", "B",
                        "--longitudinal", "--out", str(out)) == 0
    row = read_manifest(out)[0]
    ph = brain(16, volume_seed(2, 0), displacement=False, longitudinal=True)
    assert "followup_t2" not in row and "t2" not in row
    assert np.array_equal(load(out / row["followup"]), ph.volumes["followup_t2"])
    assert np.array_equal(load(out / row["file"]), ph.volumes["t2"])
    meta = json.loads((out / "phantoms.json").read_text())
    assert meta["volumes"]["followup"]["units"].startswith("T2")


def test_preprocess_carries_the_followup_but_not_the_displacement(tmp_path):
    src = tmp_path / "pairs"
    assert run_phantoms("--kind", "brain-mri", "--n", "2", "--size", "20", "--seed", "1", "--displacement",
                        "--longitudinal", "--out", str(src)) == 0
    summary = preprocess_folder(src, tmp_path / "data", PreprocessSettings(modality="mri", size=16),
                                progress=False, log=lambda msg: None)
    assert not summary.failed
    info = json.loads((tmp_path / "data" / "preprocess.json").read_text())
    assert set(info["volumes"]) == {"image", "tissue", "t2", "followup", "followup_tissue", "followup_t2"}
    for item in VolumeDataset(tmp_path / "data", split="all", keys=("image", "tissue", "followup_tissue")):
        base, follow = item["tissue"][0].numpy(), item["followup_tissue"][0].numpy()
        vent = brain_mri.VENTRICLES
        assert np.all(follow[base == vent] == vent) and (follow == vent).sum() >= (base == vent).sum()
        assert np.array_equal(follow > 0, base > 0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kind", "thorax-ct", "--displacement"], "--displacement is only available for --kind brain-mri"),
        (["--kind", "thorax-ct", "--longitudinal"], "--longitudinal is only available for --kind brain-mri"),
        (["--kind", "brain-mri", "--longitudinal", "--lesions", "wmh"],
         "--longitudinal cannot be combined with --lesions (lesion progression is not modelled)"),
    ],
)
def test_cli_usage_errors(tmp_path, argv, message):
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        run_phantoms(*argv, "--out", str(tmp_path / "x"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_generate_refuses_the_options_for_thorax():
    with pytest.raises(ValueError, match="displacement fields are only available for brain-mri"):
        generate("thorax-ct", 16, 0, displacement=True)
    with pytest.raises(ValueError, match="longitudinal follow-ups are only available for brain-mri"):
        generate("thorax-ct", 16, 0, longitudinal=True)


def test_the_light_copies_agree_with_the_phantom_modules():
    assert phantom_set.DISPLACEMENT_VOLUME_NAMES == DISP
    assert phantom_set.LONGITUDINAL_VOLUME_NAMES == brain_mri.LONGITUDINAL_VOLUMES
    assert phantom_set.HEALTHY_VOLUME_NAMES == brain_mri.HEALTHY_VOLUMES
    for domain in ("A", "B", "both"):
        assert phantom_set.volume_names("brain-mri", domain, False, True) == tuple(
            volume_specs("brain-mri", domain, False, True))
        assert phantom_set.volume_names("brain-mri", domain, False, True, True) == tuple(
            volume_specs("brain-mri", domain, False, True, True))
