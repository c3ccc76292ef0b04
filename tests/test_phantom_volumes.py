"""Phantoms' aligned extra volumes (tissue label maps, brain T2), any grid size and anisotropic voxels,
and how `medgen preprocess` carries the extra volumes into a data set with the image's geometry."""

from __future__ import annotations

import argparse
import csv
import json
from functools import lru_cache

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from medgen.core.volume import denormalize_ct
from medgen.data.dataset import VolumeDataset
from medgen.data.phantoms import brain_mri, generate, thorax_ct, volume_seed, volume_specs
from medgen.data.preprocess import PreprocessSettings, preprocess_folder

torch.set_num_threads(1)

LUNG_CLASSES = (thorax_ct.LUNG, thorax_ct.EMPHYSEMA)


@lru_cache(maxsize=None)
def thorax(size, seed, nodules=False, spacing=None):
    return generate("thorax-ct", size, seed, nodules=nodules, spacing=spacing)


@lru_cache(maxsize=None)
def brain(size, seed, spacing=None):
    return generate("brain-mri", size, seed, spacing=spacing)


def run_phantoms(*argv: str) -> int:
    from medgen.commands import phantoms

    parser = argparse.ArgumentParser()
    phantoms.add_parser(parser.add_subparsers())
    args = parser.parse_args(["phantoms", *argv])
    return args.func(args)


def read_manifest(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def lung_agreement(tissue: np.ndarray, hu: np.ndarray) -> float:
    """Share of body voxels (label > 0) where 'labelled lung' and 'below -500 HU' agree."""
    lung = np.isin(tissue, LUNG_CLASSES)
    body = tissue > 0
    return float((lung == (hu < -500))[body].mean())


# -- tissue label maps ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_thorax_tissue_map_agrees_with_the_image(seed):
    ph = thorax(48, seed, True)
    hu, t, m = ph.array, ph.volumes["tissue"], ph.masks
    assert t.dtype == np.int16 and t.shape == hu.shape
    assert set(np.unique(t)) <= set(thorax_ct.TISSUE_CLASSES)
    # labels that are ground-truth masks are exactly those masks
    assert np.array_equal(t == thorax_ct.BONE, m["bone"])
    assert np.array_equal(t == thorax_ct.EMPHYSEMA, m["emphysema"])
    assert np.array_equal(t > 0, m["body"])
    # lung-labelled voxels are in the lung HU range (all of them away from the lung's edge)
    lung = np.isin(t, LUNG_CLASSES)
    assert (hu[t == thorax_ct.LUNG] < -500).mean() > 0.88
    assert (hu[ndimage.binary_erosion(lung)] < -500).mean() > 0.995
    assert (hu[t == thorax_ct.EMPHYSEMA] < -900).mean() > 0.95
    assert lung_agreement(t, hu) > 0.96
    # every voxel above +300 HU lies on or next to a bone label
    assert ndimage.binary_dilation(t == thorax_ct.BONE)[hu > 300].all()
    median = {c: np.median(hu[t == c]) for c in np.unique(t)}
    assert median[thorax_ct.BACKGROUND] < -980
    assert -150 < median[thorax_ct.FAT] < -60
    assert -10 < median[thorax_ct.SOFT_TISSUE] < 80
    assert -10 < median[thorax_ct.BLOOD] < 60
    assert 150 < median[thorax_ct.BONE]
    assert median[thorax_ct.AIRWAY] < -400
    assert (t[m["heart"]] == thorax_ct.BLOOD).mean() > 0.85
    # nodules get their own class where they are; the nodule-free phantom has none
    nodule = t == thorax_ct.NODULE
    assert nodule.any() == (ph.factors["nodule_count"] > 0)
    assert not (thorax(48, seed).volumes["tissue"] == thorax_ct.NODULE).any()
    if nodule.any():
        assert (hu[nodule] - thorax(48, seed).array[nodule]).mean() > 100


def test_brain_tissue_map_and_t2_contrast():
    ph = brain(48, 1)
    t1, t2, t, m = ph.array, ph.volumes["t2"], ph.volumes["tissue"], ph.masks
    assert t.dtype == np.int16 and t2.dtype == np.float32 and t2.shape == t1.shape == t.shape
    assert np.array_equal(t == brain_mri.GREY_MATTER, m["gm"] & ~m["ventricles"])
    assert np.array_equal(t == brain_mri.WHITE_MATTER, m["wm"] & ~m["ventricles"])
    assert np.array_equal(t == brain_mri.VENTRICLES, m["ventricles"])
    assert np.array_equal(t > 0, m["intracranial"])
    med1 = {c: float(np.median(t1[t == c])) for c in range(5)}
    med2 = {c: float(np.median(t2[t == c])) for c in range(5)}
    # T1: white > grey > CSF; T2 the opposite: CSF bright, white matter darker than grey
    assert med1[brain_mri.WHITE_MATTER] > 1.1 * med1[brain_mri.GREY_MATTER] > 1.1 * med1[brain_mri.CSF]
    assert med2[brain_mri.VENTRICLES] > 1.5 * med2[brain_mri.GREY_MATTER]
    assert med2[brain_mri.CSF] > 1.1 * med2[brain_mri.GREY_MATTER]
    assert med2[brain_mri.GREY_MATTER] > 1.1 * med2[brain_mri.WHITE_MATTER]
    assert med1[brain_mri.VENTRICLES] < 0.6 * med1[brain_mri.GREY_MATTER]
    # the same noise model (Rician, >= 0, a low floor outside the head), drawn independently
    outside = ~ndimage.binary_dilation(m["intracranial"], iterations=2)
    assert t2.min() >= 0 and np.median(t2[outside]) < 0.1 * med2[brain_mri.VENTRICLES]
    assert abs(np.corrcoef(t1[outside], t2[outside])[0, 1]) < 0.1
    assert np.array_equal(t2, generate("brain-mri", 48, 1).volumes["t2"])


def test_volume_specs_document_the_class_tables():
    thorax_spec, brain_spec = volume_specs("thorax-ct"), volume_specs("brain-mri")
    assert list(thorax_spec) == ["tissue"] and list(brain_spec) == ["tissue", "t2"]
    assert thorax_spec["tissue"]["kind"] == "label" and brain_spec["t2"]["kind"] == "intensity"
    assert thorax_spec["tissue"]["classes"]["3"].startswith("lung")
    assert brain_spec["tissue"]["classes"]["3"] == "white matter"
    assert len(thorax_spec["tissue"]["classes"]) == 9 and len(brain_spec["tissue"]["classes"]) == 5
    from medgen.data.phantoms.phantom_set import VOLUME_NAMES

    assert VOLUME_NAMES == {"thorax-ct": tuple(thorax_spec), "brain-mri": tuple(brain_spec)}


# -- any size, anisotropic voxels -------------------------------------------------------------


def test_thorax_on_an_anisotropic_grid_is_the_same_subject():
    aniso = thorax((40, 40, 24), 2, spacing=(10.0, 10.0, 16.0))
    iso = thorax(40, 2)  # 10 mm isotropic
    hu, t, f = aniso.array, aniso.volumes["tissue"], aniso.factors
    assert hu.shape == t.shape == (40, 40, 24) and aniso.spacing == (10.0, 10.0, 16.0)
    assert np.allclose(np.diag(aniso.affine)[:3], [10.0, 10.0, 16.0])
    assert np.allclose(aniso.affine[:3, 3], [-195.0, -195.0, -184.0])  # centred on the anatomy
    # ground truth measured on the final image with the anisotropic voxel volume
    lung = aniso.masks["lung"] & (hu < -500)
    assert f["lung_volume_ml"] == pytest.approx(lung.sum() * 10 * 10 * 16 / 1000.0)
    assert f["emphysema_pct"] == pytest.approx(100.0 * (lung & (hu < -950)).sum() / lung.sum())
    assert f["body_size_mm"] == pytest.approx(aniso.masks["body"].any(axis=(1, 2)).sum() * 10.0)
    # the anatomy is defined in mm: the same subject as on the 10 mm isotropic grid
    for key, rel in [("lung_volume_ml", 0.05), ("heart_volume_ml", 0.1), ("bone_volume_ml", 0.15)]:
        assert f[key] == pytest.approx(iso.factors[key], rel=rel)
    assert f["body_size_mm"] == iso.factors["body_size_mm"]
    assert f["emphysema_pct"] == pytest.approx(iso.factors["emphysema_pct"], abs=1.5)
    assert lung_agreement(t, hu) > 0.96


def test_brain_on_an_anisotropic_non_power_of_two_grid():
    aniso = brain((36, 40, 24), 4, spacing=(5.0, 5.0, 8.0))
    iso = brain(40, 4)  # 5 mm isotropic, a size that is not a power of two
    assert iso.array.shape == (40, 40, 40) and iso.spacing == (5.0, 5.0, 5.0)
    assert aniso.array.shape == aniso.volumes["t2"].shape == aniso.volumes["tissue"].shape == (36, 40, 24)
    assert aniso.spacing == (5.0, 5.0, 8.0)
    for key in ("brain_volume_ml", "intracranial_volume_ml"):
        assert aniso.factors[key] == pytest.approx(iso.factors[key], rel=0.03)
    voxel_ml = 5.0 * 5.0 * 8.0 / 1000.0
    assert aniso.masks["brain"].sum() * voxel_ml == pytest.approx(aniso.factors["brain_volume_ml"], rel=0.1)
    # world placement: the brain's centre of mass is at the same place in mm on both grids
    com = [ph.affine[:3, :3] @ np.array(ndimage.center_of_mass(ph.masks["brain"])) + ph.affine[:3, 3]
           for ph in (aniso, iso)]
    assert np.abs(com[0] - com[1]).max() < 2.0


# -- writing them ------------------------------------------------------------------------------


def test_phantom_set_writes_the_extra_volumes_next_to_the_image(tmp_path):
    out = tmp_path / "mr"
    assert run_phantoms("--kind", "brain-mri", "--n", "3", "--shape", "20,24,16", "--spacing", "9,8,11",
                        "--seed", "4", "--out", str(out)) == 0
    rows = read_manifest(out / "manifest.csv")
    assert list(rows[0])[:4] == ["id", "file", "kind", "label"] and list(rows[0])[-2:] == ["tissue", "t2"]
    meta = json.loads((out / "phantoms.json").read_text())
    assert meta["shape"] == [20, 24, 16] and meta["spacing_mm"] == [9.0, 8.0, 11.0]
    assert meta["volumes"]["tissue"]["kind"] == "label" and meta["volumes"]["t2"]["kind"] == "intensity"
    assert meta["volumes"]["tissue"]["classes"] == {str(k): v for k, v in brain_mri.TISSUE_CLASSES.items()}
    for i, row in enumerate(rows):
        assert row["tissue"] == f"tissue/{row['id']}.nii.gz" and row["t2"] == f"t2/{row['id']}.nii.gz"
        ph = generate("brain-mri", (20, 24, 16), volume_seed(4, i), spacing=(9.0, 8.0, 11.0))
        image = nib.load(str(out / row["file"]))
        tissue, t2 = nib.load(str(out / row["tissue"])), nib.load(str(out / row["t2"]))
        assert image.header.get_zooms() == (9.0, 8.0, 11.0)
        assert np.array_equal(tissue.affine, image.affine) and np.array_equal(t2.affine, image.affine)
        assert tissue.header.get_data_dtype() == np.int16 and t2.header.get_data_dtype() == np.float32
        assert np.array_equal(np.asarray(tissue.dataobj), ph.volumes["tissue"])
        assert np.array_equal(np.asarray(t2.dataobj), ph.volumes["t2"])
    # a smaller set is a prefix of the larger one and takes the stale extra volumes away
    before = np.asarray(nib.load(str(out / rows[1]["t2"])).dataobj)
    assert run_phantoms("--kind", "brain-mri", "--n", "2", "--shape", "20,24,16", "--spacing", "9,8,11",
                        "--seed", "4", "--out", str(out)) == 0
    assert sorted(p.name for p in (out / "t2").iterdir()) == ["brain-mri-0000.nii.gz", "brain-mri-0001.nii.gz"]
    assert sorted(p.name for p in (out / "tissue").iterdir()) == ["brain-mri-0000.nii.gz", "brain-mri-0001.nii.gz"]
    assert np.array_equal(np.asarray(nib.load(str(out / rows[1]["t2"])).dataobj), before)
    # a thorax set into the same folder: no t2 any more
    assert run_phantoms("--kind", "thorax-ct", "--n", "1", "--size", "20", "--out", str(out)) == 0
    assert not (out / "t2").exists()
    assert sorted(p.name for p in (out / "tissue").iterdir()) == ["thorax-ct-0000.nii.gz"]
    assert list(json.loads((out / "phantoms.json").read_text())["volumes"]) == ["tissue"]


# -- carrying them through `medgen preprocess` ---------------------------------------------------


def test_preprocess_carries_the_tissue_map_of_anisotropic_phantoms(tmp_path):
    raw, data = tmp_path / "raw", tmp_path / "data"
    assert run_phantoms("--kind", "thorax-ct", "--n", "2", "--shape", "40,40,24", "--spacing", "10,10,16",
                        "--out", str(raw)) == 0
    logs = []
    summary = preprocess_folder(raw, data, PreprocessSettings("ct", 32), progress=False, log=logs.append)
    assert summary.failed == [] and len(summary.written) == 2
    rows = read_manifest(data / "manifest.csv")
    assert [r["tissue"] for r in rows] == [f"tissues/{r['id']}.npy" for r in rows]
    assert "emphysema_pct" in rows[0] and "t2" not in rows[0]
    info = json.loads((data / "preprocess.json").read_text())
    assert info["volumes"]["tissue"]["kind"] == "label" and info["volumes"]["tissue"]["dtype"] == "int16"
    assert info["volumes"]["tissue"]["classes"]["7"].startswith("emphysema")
    ds = VolumeDataset(data, split="all", keys=("image", "tissue"))
    for item, row in zip(ds, rows):
        image, tissue = item["image"][0].numpy(), item["tissue"][0].numpy()
        assert image.shape == tissue.shape == (32, 32, 32) and item["tissue"].dtype == torch.int64
        original = np.asarray(nib.load(str(raw / "tissue" / f"{item['id']}.nii.gz")).dataobj)
        # nearest neighbour: only the original classes, never a blend; padding is background
        assert set(np.unique(tissue)) <= set(np.unique(original))
        assert {thorax_ct.BACKGROUND, thorax_ct.LUNG, thorax_ct.BONE} <= set(np.unique(tissue))
        assert np.load(data / row["tissue"]).dtype == np.int16
        hu = denormalize_ct(image)
        assert (tissue[hu <= -1023] == thorax_ct.BACKGROUND).all()
        # the lung labels sit where the image is in the lung HU range ...
        agreement = lung_agreement(tissue, hu)
        lung = np.isin(tissue, LUNG_CLASSES)
        assert float((lung == ((hu < -500) & (tissue > 0))).mean()) >= 0.95
        assert agreement > 0.93
        # ... and nowhere else: any one-voxel shift of the map matches clearly worse
        for axis in range(3):
            for step in (-1, 1):
                assert lung_agreement(np.roll(tissue, step, axis=axis), hu) < agreement - 0.01
    # a rerun skips both subjects and keeps their tissue maps
    again = preprocess_folder(raw, data, PreprocessSettings("ct", 32), progress=False, log=logs.append)
    assert again.skipped == [r["id"] for r in rows] and read_manifest(data / "manifest.csv") == rows


def test_preprocess_carries_brain_t2_and_tissue(tmp_path):
    raw, data = tmp_path / "raw", tmp_path / "data"
    assert run_phantoms("--kind", "brain-mri", "--n", "2", "--size", "24", "--out", str(raw)) == 0
    summary = preprocess_folder(raw, data, PreprocessSettings("mri", 32, spacing=6.0), progress=False,
                                log=lambda msg: None)
    assert summary.failed == []
    info = json.loads((data / "preprocess.json").read_text())
    assert {k: v["kind"] for k, v in info["volumes"].items()} == {"image": "intensity", "tissue": "label",
                                                                  "t2": "intensity"}
    for item in VolumeDataset(data, split="all"):
        t1, t2, tissue = (item[k][0].numpy() for k in ("image", "t2", "tissue"))
        assert t2.min() >= -1 and t2.max() <= 1 and np.isclose(t2.max(), 1.0)  # its own percentiles
        med1 = {c: np.median(t1[tissue == c]) for c in (brain_mri.CSF, brain_mri.GREY_MATTER, brain_mri.WHITE_MATTER)}
        med2 = {c: np.median(t2[tissue == c]) for c in med1}
        assert med1[brain_mri.WHITE_MATTER] > med1[brain_mri.GREY_MATTER] > med1[brain_mri.CSF]
        assert med2[brain_mri.CSF] > med2[brain_mri.GREY_MATTER] > med2[brain_mri.WHITE_MATTER]
        assert np.median(t1[tissue == brain_mri.BACKGROUND]) < -0.8
        assert np.median(t2[tissue == brain_mri.BACKGROUND]) < -0.8
