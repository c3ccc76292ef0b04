"""Phantom lesions for anomaly detection: a voxel instance map exactly where the image changed, the
lesion-free counterpart, lesion values and sizes, abnormal volumes per (seed, index), the CLI."""

from __future__ import annotations

import argparse
import csv
import json
import re
from functools import lru_cache

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medgen.core.errors import UsageError
from medgen.data.phantoms import domains, generate, lesions, phantom_set, volume_seed, volume_specs
from medgen.data.phantoms.shapes import request_grid

THORAX_KINDS = ("nodule", "emphysema", "mass")
BRAIN_KINDS = ("wmh", "tumour")


@lru_cache(maxsize=None)
def phantom(kind: str, size, seed: int, kinds: tuple[str, ...] = ()):
    return generate(kind, size, seed, lesions=kinds)


def run_phantoms(*argv: str) -> int:
    from medgen.commands import phantoms as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["phantoms", *argv])
    return args.func(args)


def read_manifest(folder) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def load(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def records(ph) -> list[dict]:
    return json.loads(ph.factors["lesions"])


def centre_voxel(rec: dict) -> tuple[int, int, int]:
    return tuple(int(round(rec[k])) for k in "xyz")


# -- the lesion map is exactly where the image changed --------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thorax_lesions_change_the_image_only_inside_the_lesion_map(seed):
    ph = phantom("thorax-ct", 32, seed, THORAX_KINDS)
    plain = phantom("thorax-ct", 32, seed)
    img, normal, les = ph.array, ph.volumes["normal"], ph.volumes["lesion"]
    assert les.dtype == np.int16 and les.shape == img.shape and normal.dtype == np.float32
    # the lesion-free counterpart is exactly the volume generated without lesions ...
    assert np.array_equal(normal, plain.array)
    # ... and the image equals it bit for bit outside the lesion map, the noise-free image too
    outside = les == 0
    assert np.array_equal(img[outside], normal[outside])
    assert np.array_equal(ph.noise_free[outside], plain.noise_free[outside])
    changed = img != normal
    assert changed.any() and not (changed & outside).any()
    # the subject's own ground truth is its normal anatomy, unchanged by the lesions
    assert {k: v for k, v in ph.factors.items() if k not in lesions.FACTOR_NAMES} == plain.factors
    assert all(np.array_equal(ph.masks[k], plain.masks[k]) for k in plain.masks)
    assert np.array_equal(ph.volumes["tissue"], plain.volumes["tissue"])
    # one label per visible lesion, numbered 1..n in the order of the records
    recs = records(ph)
    visible = [r for r in recs if r["visible"]]
    assert [r["label"] for r in visible] == list(range(1, len(visible) + 1))
    assert sorted(set(np.unique(les)) - {0}) == [r["label"] for r in visible]
    for r in recs:
        assert r["voxels"] == int((les == r["label"]).sum()) if r["visible"] else r["voxels"] == 0 == r["label"]
        assert r["kind"] in THORAX_KINDS
    assert ph.factors["lesion_count"] == len(visible) and ph.factors["abnormal"] == int(bool(visible))
    assert ph.factors["lesion_ml"] == pytest.approx((les > 0).sum() * 12.5**3 / 1000.0)
    # solid lesions change almost every voxel of their mask
    solid = np.isin(les, [r["label"] for r in visible if r["kind"] != "emphysema"])
    if solid.any():
        assert changed[solid].mean() > 0.9


@pytest.mark.parametrize("seed", [0, 2])
def test_brain_lesions_show_on_t1_and_t2_inside_the_lesion_map_only(seed):
    ph = phantom("brain-mri", 32, seed, BRAIN_KINDS)
    plain = phantom("brain-mri", 32, seed)
    les = ph.volumes["lesion"]
    assert np.array_equal(ph.volumes["normal"], plain.array)
    assert np.array_equal(ph.volumes["normal_t2"], plain.volumes["t2"])
    outside = les == 0
    for image, normal in ((ph.array, plain.array), (ph.volumes["t2"], plain.volumes["t2"])):
        assert np.array_equal(image[outside], normal[outside])
        assert (image != normal)[~outside].mean() > 0.95  # both contrasts show every lesion
    assert {k: v for k, v in ph.factors.items() if k not in lesions.FACTOR_NAMES} == plain.factors
    assert np.array_equal(ph.volumes["tissue"], plain.volumes["tissue"])
    assert ph.factors["abnormal"] == 1 and ph.factors["lesion_count"] == les.max() > 0


# -- lesion values -----------------------------------------------------------------------------------


def test_thorax_lesion_values_are_in_their_hu_ranges():
    seen = set()
    for seed in range(6):
        ph = phantom("thorax-ct", 48, seed, THORAX_KINDS)
        les, img, clean = ph.volumes["lesion"], ph.array, ph.noise_free
        before = phantom("thorax-ct", 48, seed).noise_free
        for r in records(ph):
            if not r["visible"] or r["voxels"] < 20:
                continue
            seen.add(r["kind"])
            mask = les == r["label"]
            centre = centre_voxel(r)
            assert mask[centre]
            # the centre voxel holds (nearly) the lesion's value: only the scanner's blur mixes in the rest
            lo, hi = sorted((before[centre], r["hu"]))
            assert lo - 0.06 <= clean[centre] <= hi + 0.06  # the record rounds the value to 0.1 HU
            assert abs(clean[centre] - r["hu"]) <= 0.2 * abs(r["hu"] - before[centre]) + 1.0
            if r["kind"] == "emphysema":
                assert -995.0 <= r["hu"] <= -975.0 and 20.0 <= r["diameter_mm"] <= 50.0
                # air without vessels, darker than the lung it replaces
                assert np.median(img[mask]) < -900 and clean[mask].mean() < before[mask].mean()
                assert ph.masks["lung"][mask].mean() > 0.9
            else:
                lo, hi = (20.0, 60.0) if r["kind"] == "nodule" else (25.0, 55.0)
                assert lo <= r["hu"] <= hi
                assert np.median(img[ndimage.binary_erosion(mask)]) > -150
                if r["kind"] == "nodule":
                    assert 3.0 <= r["diameter_mm"] <= 30.0 and ph.volumes["normal"][centre] < -500
                else:
                    assert 30.0 <= r["diameter_mm"] <= 60.0 and r["site"] in ("lung", "mediastinum")
    assert seen == set(THORAX_KINDS)


def test_brain_lesion_contrast_wmh_bright_on_t2_dark_on_t1_tumour_rim_and_core():
    kinds_seen = set()
    for seed in range(4):
        ph = phantom("brain-mri", 48, seed, BRAIN_KINDS)
        t1, t2, n1, n2 = ph.array, ph.volumes["t2"], ph.volumes["normal"], ph.volumes["normal_t2"]
        les, wm, gm = ph.volumes["lesion"], ph.masks["wm"], ph.masks["gm"]
        wm1, gm1, gm2 = np.median(n1[wm]), np.median(n1[gm]), np.median(n2[gm])
        for r in records(ph):
            if not r["visible"]:
                continue
            mask = les == r["label"]
            kinds_seen.add(r["kind"])
            if r["kind"] == "wmh":
                assert 3.0 <= r["diameter_mm"] <= 15.0 and r["site"] in ("periventricular", "deep-white-matter")
                assert ph.masks["wm"][mask].mean() > 0.8  # in white matter
                # T2 hyperintense (above the subject's grey matter), T1 hypointense (below its white matter)
                assert np.mean(t2[mask]) > np.mean(n2[mask]) and np.median(t2[mask]) > gm2
                assert np.mean(t1[mask]) < np.mean(n1[mask]) and np.median(t1[mask]) < wm1
            else:
                assert 20.0 <= r["diameter_mm"] <= 50.0 and r["core_diameter_mm"] < r["diameter_mm"]
                centre = centre_voxel(r)
                assert mask[centre]
                # necrotic core: CSF-like, dark on T1, bright on T2; enhancing rim: brighter than white matter
                assert t1[centre] < gm1 and t2[centre] > 1.5 * gm2
                assert np.percentile(t1[mask], 95) > 1.05 * wm1
    assert kinds_seen == set(BRAIN_KINDS)


# -- sizes and partial volume ------------------------------------------------------------------------


def sphere_lesion(kind, centre, diameter, hu=50.0, within=None):
    r = 0.5 * diameter
    return lesions.Lesion(kind, np.asarray(centre, float), np.full(3, r), np.eye(3),
                          [lesions.Layer(0.0, {"hu": hu}, within)])


@pytest.mark.parametrize("voxel_mm", [2.0, 5.0, 12.5])
@pytest.mark.parametrize("diameter", [12.0, 20.0, 30.0])
def test_mask_volume_matches_the_diameter_within_partial_volume(voxel_mm, diameter):
    grid = request_grid(16, voxel_mm, 400.0)
    image = {"hu": np.full(grid.shape, -850.0, np.float32)}
    centre = (0.3 * voxel_mm, -0.2 * voxel_mm, 0.1 * voxel_mm)
    instance, recs = lesions.paint([sphere_lesion("nodule", centre, diameter)], grid, image)
    true_ml = np.pi / 6.0 * diameter**3 / 1000.0
    voxel_ml = voxel_mm**3 / 1000.0
    (rec,) = recs
    if not rec["visible"]:  # a sphere smaller than about a voxel may not cover half of any
        assert diameter < 1.6 * voxel_mm and not instance.any() and (image["hu"] == -850.0).all()
        return
    mask_ml = rec["voxels"] * voxel_ml
    assert rec["voxels"] == int((instance == 1).sum()) and rec["ml"] == pytest.approx(mask_ml, abs=1e-6)
    # within the voxels the surface passes through (half a voxel each side, plus one voxel)
    tolerance = np.pi * diameter**2 * (0.5 * voxel_mm) / 1000.0 + voxel_ml
    assert abs(mask_ml - true_ml) <= tolerance
    if diameter >= 4 * voxel_mm:
        assert mask_ml == pytest.approx(true_ml, rel=0.15)
    # painted only on the mask: full value where fully covered, partial volume at the rim
    changed = image["hu"] != -850.0
    assert np.array_equal(changed, instance == 1)
    assert image["hu"].max() <= 50.0 + 1e-3 and image["hu"][changed].min() >= -850.0 + 0.5 * 900.0 - 1e-3


def test_sub_voxel_lesions_are_recorded_as_not_visible_and_not_painted():
    grid = request_grid(16, 25.0, 400.0)
    image = {"hu": np.full(grid.shape, -850.0, np.float32)}
    small = sphere_lesion("nodule", (5.0, 5.0, 5.0), 4.0)
    large = sphere_lesion("mass", (100.0, 0.0, 0.0), 50.0)
    instance, recs = lesions.paint([small, large], grid, image)
    assert [r["visible"] for r in recs] == [False, True] and [r["label"] for r in recs] == [0, 1]
    assert recs[0]["voxels"] == 0 and recs[1]["voxels"] == int((instance == 1).sum()) > 0
    assert np.array_equal(image["hu"] != -850.0, instance > 0)
    assert lesions.factors(recs, grid.voxel_ml)["lesion_count"] == 1


def test_tissue_confined_lesions_follow_the_tissue_fraction():
    grid = request_grid(24, 2.0, 400.0)
    half = np.zeros(grid.shape, np.float32)
    half[12:] = 1.0  # the lesion's tissue fills only x >= 0
    image = {"hu": np.full(grid.shape, 0.0, np.float32)}
    instance, (rec,) = lesions.paint([sphere_lesion("emphysema", (0, 0, 0), 20.0, -1000.0, "lung")], grid,
                                     image, {"lung": half})
    assert rec["visible"] and not instance[:12].any() and instance[12:].any()
    assert rec["voxels"] * grid.voxel_ml == pytest.approx(0.5 * np.pi / 6 * 20.0**3 / 1000, rel=0.2)


@pytest.mark.parametrize("kind, kinds, size, spacing", [
    ("thorax-ct", THORAX_KINDS, 16, None),
    ("thorax-ct", ("mass",), (24, 20, 16), (12.0, 12.0, 20.0)),
    ("brain-mri", BRAIN_KINDS, 16, None),
    ("brain-mri", ("tumour",), (20, 24, 16), (9.0, 8.0, 11.0)),
])
def test_coarse_and_anisotropic_grids(kind, kinds, size, spacing):
    ph = generate(kind, size, 3, spacing=spacing, lesions=kinds)
    les = ph.volumes["lesion"]
    assert les.shape == ph.array.shape == ph.volumes["normal"].shape
    assert np.array_equal(ph.array[les == 0], ph.volumes["normal"][les == 0])
    recs = records(ph)
    assert recs and all(r["kind"] in kinds for r in recs)
    voxel_ml = float(np.prod(ph.spacing)) / 1000.0
    assert ph.factors["lesion_ml"] == pytest.approx((les > 0).sum() * voxel_ml)
    for r in recs:  # every lesion either has mask voxels or is listed as not visible
        assert (r["voxels"] > 0) == r["visible"] == (r["label"] > 0)
    if "mass" in kinds or "tumour" in kinds:  # large lesions are visible even on coarse grids
        assert ph.factors["abnormal"] == 1


# -- determinism and the abnormal share ----------------------------------------------------------------


def test_same_seed_same_lesions():
    for kind, kinds in (("thorax-ct", THORAX_KINDS), ("brain-mri", BRAIN_KINDS)):
        a, b = generate(kind, 24, 5, lesions=kinds), generate(kind, 24, 5, lesions=kinds)
        assert np.array_equal(a.array, b.array) and a.factors == b.factors
        assert all(np.array_equal(a.volumes[k], b.volumes[k]) for k in a.volumes)
        assert not np.array_equal(generate(kind, 24, 6, lesions=kinds).volumes["lesion"], a.volumes["lesion"])
    # the requested order of the kinds does not matter
    assert records(generate("thorax-ct", 24, 5, lesions=THORAX_KINDS[::-1])) == records(
        generate("thorax-ct", 24, 5, lesions=THORAX_KINDS))


def test_abnormal_volumes_are_chosen_per_seed_with_the_requested_share():
    seeds = [volume_seed(0, i) for i in range(4000)]
    for p in (0.0, 0.2, 0.5, 1.0):
        share = np.mean([lesions.is_abnormal(s, p) for s in seeds])
        assert share == pytest.approx(p, abs=0.03)
    # a larger share keeps the abnormal volumes of a smaller one
    low = {s for s in seeds if lesions.is_abnormal(s, 0.3)}
    high = {s for s in seeds if lesions.is_abnormal(s, 0.6)}
    assert low < high


def test_volume_i_is_the_same_for_any_n(tmp_path):
    common = ("--kind", "thorax-ct", "--size", "16", "--seed", "2", "--lesions", "mass,emphysema")
    assert run_phantoms(*common, "--n", "4", "--out", str(tmp_path / "four")) == 0
    assert run_phantoms(*common, "--n", "8", "--out", str(tmp_path / "eight")) == 0
    four, eight = read_manifest(tmp_path / "four"), read_manifest(tmp_path / "eight")
    assert four == eight[:4]
    for row in four:
        for column in ("file", "tissue", "lesion", "normal"):
            a, b = (load(tmp_path / d / row[column]) for d in ("four", "eight"))
            assert np.array_equal(a, b)
    abnormal = [int(r["abnormal"]) for r in eight]
    expected = [int(lesions.is_abnormal(volume_seed(2, i), 0.5)) for i in range(8)]
    assert abnormal == expected and 0 < sum(abnormal) < 8  # masses and bullae are visible at 16³


# -- writing sets ----------------------------------------------------------------------------------


def test_lesion_set_writes_the_mask_the_counterpart_and_the_manifest_columns(tmp_path):
    out = tmp_path / "ct"
    assert run_phantoms("--kind", "thorax-ct", "--n", "4", "--size", "20", "--seed", "1", "--lesions",
                        "nodule,emphysema,mass", "--abnormal-fraction", "0.6", "--out", str(out)) == 0
    rows = read_manifest(out)
    assert list(rows[0])[-3:] == ["tissue", "lesion", "normal"]
    assert list(rows[0])[10:14] == ["abnormal", "lesion_count", "lesion_ml", "lesions"]
    meta = json.loads((out / "phantoms.json").read_text())
    assert meta["lesions"]["abnormal_fraction"] == 0.6 and list(meta["lesions"]["kinds"]) == list(THORAX_KINDS)
    assert meta["volumes"]["lesion"]["kind"] == "label" and meta["volumes"]["lesion"]["dtype"] == "int16"
    assert meta["volumes"]["normal"]["kind"] == "intensity" and meta["volumes"]["normal"]["dtype"] == "int16"
    most = max(int(r["lesion_count"]) for r in rows)
    assert sorted(int(k) for k in meta["volumes"]["lesion"]["classes"]) == list(range(most + 1))
    assert sum(int(r["abnormal"]) for r in rows) > 0
    for i, row in enumerate(rows):
        seed = volume_seed(1, i)
        drawn = lesions.is_abnormal(seed, 0.6)
        ph = generate("thorax-ct", 20, seed, lesions=THORAX_KINDS if drawn else ())
        image, les, normal = (nib.load(str(out / row[c])) for c in ("file", "lesion", "normal"))
        assert np.array_equal(les.affine, image.affine) and np.array_equal(normal.affine, image.affine)
        assert les.header.get_data_dtype() == np.int16 and normal.header.get_data_dtype() == np.int16
        img, lab, nrm = (np.asarray(v.dataobj) for v in (image, les, normal))
        assert np.array_equal(img, ph.array.astype(np.int16))
        assert np.array_equal(nrm, generate("thorax-ct", 20, seed).array.astype(np.int16))
        assert np.array_equal(img[lab == 0], nrm[lab == 0])
        recs = json.loads(row["lesions"])
        assert int(row["lesion_count"]) == len(np.unique(lab[lab > 0])) == sum(r["visible"] for r in recs)
        assert int(row["abnormal"]) == int(lab.any())
        assert float(row["lesion_ml"]) == pytest.approx((lab > 0).sum() * 20.0**3 / 1000.0)
        if not drawn:  # a normal volume of a lesion set: an empty map, its own image as the counterpart
            assert recs == [] and not lab.any() and np.array_equal(img, nrm)


def test_normal_sets_have_no_lesions(tmp_path):
    common = ("--kind", "brain-mri", "--n", "2", "--size", "16", "--seed", "4")
    assert run_phantoms(*common, "--normal", "--out", str(tmp_path / "normal")) == 0
    assert run_phantoms(*common, "--out", str(tmp_path / "plain")) == 0
    rows = read_manifest(tmp_path / "normal")
    columns = [(r["abnormal"], r["lesion_count"], r["lesion_ml"], r["lesions"]) for r in rows]
    assert columns == [("0", "0", "0.0", "[]")] * 2
    assert not (tmp_path / "normal" / "lesion").exists() and not (tmp_path / "normal" / "normal").exists()
    meta = json.loads((tmp_path / "normal" / "phantoms.json").read_text())
    assert meta["normal"] is True and "lesions" not in meta and list(meta["volumes"]) == ["tissue", "t2"]
    plain = read_manifest(tmp_path / "plain")
    for row, ref in zip(rows, plain):
        for column in ("file", "tissue", "t2"):
            assert np.array_equal(load(tmp_path / "normal" / row[column]), load(tmp_path / "plain" / ref[column]))
    # a set made without lesion options is written as before: no lesion columns, no lesion entries
    assert "abnormal" not in plain[0]
    assert not {"normal", "lesions"} & set(json.loads((tmp_path / "plain" / "phantoms.json").read_text()))


def test_abnormal_fraction_zero_and_one(tmp_path):
    common = ("--kind", "brain-mri", "--n", "3", "--size", "16", "--seed", "0", "--lesions", "tumour")
    assert run_phantoms(*common, "--abnormal-fraction", "0", "--out", str(tmp_path / "none")) == 0
    assert run_phantoms(*common, "--abnormal-fraction", "1", "--out", str(tmp_path / "all")) == 0
    none, every = read_manifest(tmp_path / "none"), read_manifest(tmp_path / "all")
    assert [r["abnormal"] for r in none] == ["0"] * 3 and [r["abnormal"] for r in every] == ["1"] * 3
    assert list(none[0])[-5:] == list(every[0])[-5:] == ["tissue", "t2", "lesion", "normal", "normal_t2"]
    for row in none:
        assert not load(tmp_path / "none" / row["lesion"]).any()
        assert np.array_equal(load(tmp_path / "none" / row["normal"]), load(tmp_path / "none" / row["file"]))
        assert np.array_equal(load(tmp_path / "none" / row["normal_t2"]), load(tmp_path / "none" / row["t2"]))
    # a set without lesions written over a lesion set takes the lesion volumes away
    assert run_phantoms(*common[:-2], "--out", str(tmp_path / "none")) == 0
    assert sorted(p.name for p in (tmp_path / "none").iterdir() if p.is_dir()) == ["t2", "tissue"]
    for row in every:
        lab = load(tmp_path / "all" / row["lesion"])
        for image, normal in (("file", "normal"), ("t2", "normal_t2")):
            img, nrm = load(tmp_path / "all" / row[image]), load(tmp_path / "all" / row[normal])
            assert np.array_equal(img[lab == 0], nrm[lab == 0]) and (img != nrm)[lab > 0].any()


def test_lesions_in_domain_b(tmp_path):
    # brain: the image is T2 and its counterpart the lesion-free T2
    assert run_phantoms("--kind", "brain-mri", "--n", "1", "--size", "16", "--seed", "0", "--lesions", "tumour",
                        "--abnormal-fraction", "1", "--domain", "B", "--out", str(tmp_path / "mr")) == 0
    (row,) = read_manifest(tmp_path / "mr")
    assert "normal_t2" not in row and "t2" not in row
    ph = generate("brain-mri", 16, volume_seed(0, 0), lesions=("tumour",))
    assert np.array_equal(load(tmp_path / "mr" / row["file"]), ph.volumes["t2"])
    assert np.array_equal(load(tmp_path / "mr" / row["normal"]), ph.volumes["normal_t2"])
    # thorax: the counterpart is the lesion-free subject on the second scanner, different only near the lesions
    assert run_phantoms("--kind", "thorax-ct", "--n", "1", "--size", "20", "--seed", "0", "--lesions", "mass",
                        "--abnormal-fraction", "1", "--domain", "B", "--out", str(tmp_path / "ct")) == 0
    (row,) = read_manifest(tmp_path / "ct")
    seed = volume_seed(0, 0)
    img, lab, nrm = (load(tmp_path / "ct" / row[c]) for c in ("file", "lesion", "normal"))
    assert np.array_equal(nrm, domains.render(generate("thorax-ct", 20, seed), "B", seed).astype(np.int16))
    assert lab.any() and (img != nrm)[lab > 0].mean() > 0.5
    near = ndimage.binary_dilation(lab > 0, iterations=2)
    assert np.array_equal(img[~near], nrm[~near])
    meta = json.loads((tmp_path / "ct" / "phantoms.json").read_text())
    assert meta["volumes"]["normal"]["units"].endswith("domain B (second scanner)")


# -- CLI -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kind", "thorax-ct", "--lesions", "wmh"], "--lesions: 'wmh' is not a thorax-ct lesion; choose from "
                                                      "nodule, emphysema, mass"),
        (["--kind", "brain-mri", "--lesions", "wmh,nodule"], "--lesions: 'nodule' is not a brain-mri lesion"),
        (["--kind", "thorax-ct", "--lesions", " , "], "--lesions needs at least one lesion kind"),
        (["--kind", "thorax-ct", "--abnormal-fraction", "0.3"], "--abnormal-fraction needs --lesions"),
        (["--kind", "thorax-ct", "--lesions", "mass", "--abnormal-fraction", "1.5"],
         "--abnormal-fraction must be between 0 and 1, got 1.5"),
        (["--kind", "thorax-ct", "--lesions", "mass", "--abnormal-fraction", "nan"], "--abnormal-fraction must be"),
        (["--kind", "thorax-ct", "--normal", "--lesions", "mass"], "--normal writes lesion-free volumes; it cannot "
                                                                  "be combined with --lesions"),
        (["--kind", "thorax-ct", "--normal", "--nodules"], "cannot be combined with --nodules"),
        (["--kind", "thorax-ct", "--nodules", "--lesions", "nodule"], "--nodules and --lesions cannot be combined"),
    ],
)
def test_cli_usage_errors(tmp_path, argv, message):
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        run_phantoms(*argv, "--out", str(tmp_path / "x"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_generate_refuses_unknown_kinds_and_nodules_with_lesions():
    with pytest.raises(ValueError, match="'tumour' is not a thorax-ct lesion"):
        generate("thorax-ct", 16, 0, lesions=("tumour",))
    with pytest.raises(ValueError, match="cannot be combined"):
        generate("thorax-ct", 16, 0, nodules=True, lesions=("nodule",))


def test_the_light_copies_and_the_help_agree_with_the_lesions_module():
    from medgen.commands import phantoms as command

    assert phantom_set.LESION_KIND_NAMES == lesions.LESION_KINDS
    assert phantom_set.LESION_VOLUME_NAMES == lesions.LESION_VOLUMES
    for kind in lesions.LESION_KINDS:
        for domain in ("A", "B", "both"):
            assert phantom_set.volume_names(kind, domain, True) == tuple(volume_specs(kind, domain, True))
        for name in lesions.LESION_KINDS[kind]:
            assert f"{name} (" in command._LESIONS_HELP
