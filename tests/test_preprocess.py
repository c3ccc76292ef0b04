"""Preprocessing: intensity maps, blank-slice trimming, fitting, and the `medgen preprocess` command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medgen import cli
from medgen.data.discover import discover_inputs
from medgen.data.io import Volume, read_volume, write_nifti
from medgen.data.preprocess import (
    PreprocessSettings,
    denormalize_ct,
    fit_to_cube,
    normalize_ct,
    normalize_mri,
    preprocess_volume,
    trim_blank_slices,
)
from medgen.core.errors import InputError, UsageError


@pytest.fixture
def medgen_main(monkeypatch):
    """``medgen.cli.main`` with only this command registered (other commands may still be in progress)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("preprocess",))
    return cli.main


def _manifest(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- intensity


def test_ct_window_is_exact_at_both_ends_and_linear_between():
    hu = np.array([-3024.0, -1024.0, 600.0, 3000.0, np.nan, -212.0, 0.0, -1000.0, 599.0])
    out = normalize_ct(hu)
    assert out.dtype == np.float32
    assert out[0] == -1.0 and out[1] == -1.0  # clipped / exact low end
    assert out[2] == 1.0 and out[3] == 1.0  # exact high end / clipped
    assert out[4] == -1.0  # NaN is air
    assert out[5] == 0.0  # -212 is the window centre
    expected = 2.0 * (hu[6:] + 1024.0) / 1624.0 - 1.0
    np.testing.assert_allclose(out[6:], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(denormalize_ct(out[5:]), [-212.0, 0.0, -1000.0, 599.0], atol=1e-3)


def test_ct_window_flags_change_the_map():
    out = normalize_ct(np.array([-160.0, 40.0, 240.0, 1000.0]), hu_min=-160.0, hu_max=240.0)
    np.testing.assert_array_equal(out, [-1.0, 0.0, 1.0, 1.0])


def test_mri_percentile_normalisation():
    # Nonzero voxels 1..101: numpy's 10th/90th percentiles are 11 and 91, so 51 is the middle.
    values = np.concatenate([np.zeros(50), np.arange(1.0, 102.0), [np.nan]])
    out = normalize_mri(values, percentiles=(10.0, 90.0))
    lookup = dict(zip(values[50:151], out[50:151]))
    assert lookup[11.0] == -1.0 and lookup[91.0] == 1.0
    assert lookup[51.0] == pytest.approx(0.0, abs=1e-6)
    assert lookup[31.0] == pytest.approx(-0.5, abs=1e-6)
    assert lookup[1.0] == -1.0 and lookup[101.0] == 1.0  # clipped
    assert np.all(out[:50] == -1.0) and out[-1] == -1.0  # background and NaN
    with pytest.raises(InputError, match="zero"):
        normalize_mri(np.zeros((4, 4, 4)))


# --------------------------------------------------------------------------- geometry


def test_blank_slices_trimmed_at_ends_only():
    vol = np.full((4, 4, 12), -1.0, dtype=np.float32)
    vol[1, 2, 3] = 0.5  # first content slice
    vol[..., 4] = -1.0 + 0.005  # within tolerance: blank, but in the middle, so kept
    vol[0, 0, 8] = -1.0 + 0.05  # last content slice (beyond tolerance)
    vol[..., 10] = -1.0 + 0.005  # blank at the top: dropped
    out, removed = trim_blank_slices(vol, tolerance=0.01)
    assert removed == (3, 3)
    np.testing.assert_array_equal(out, vol[..., 3:9])
    with pytest.raises(InputError, match="blank"):
        trim_blank_slices(np.full((3, 3, 3), -1.0, dtype=np.float32))


def test_fit_keep_aspect_pads_and_resizes_linearly():
    # Extents 32 x 16 x 16 mm; S = 16 → 2 mm voxels, shape 16 x 8 x 8, padded by 4 on y and z.
    ramp = np.broadcast_to(np.arange(32, dtype=np.float32)[:, None, None] / 32.0, (32, 16, 8)).copy()
    out, spacing = fit_to_cube(ramp, (1.0, 1.0, 2.0), 16, "resize-keep-aspect")
    assert out.shape == (16, 16, 16)
    assert spacing == (2.0, 2.0, 2.0)
    assert np.all(out[:, :4] == -1.0) and np.all(out[:, 12:] == -1.0)
    assert np.all(out[:, :, :4] == -1.0) and np.all(out[:, :, 12:] == -1.0)
    # Output voxel j covers input voxels 2j, 2j+1: a linear ramp gives (2j + 0.5) / 32 away from the edges.
    j = np.arange(2, 14)
    np.testing.assert_allclose(out[2:14, 8, 8], (2 * j + 0.5) / 32.0, atol=1e-5)


def test_fit_crop_pad_and_resize():
    vol = np.arange(20 * 10 * 16, dtype=np.float32).reshape(20, 10, 16) / 4000.0
    out, spacing = fit_to_cube(vol, (1.0, 2.0, 3.0), 16, "crop-pad")
    assert spacing == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(out[:, 3:13, :], vol[2:18])
    assert np.all(out[:, :3] == -1.0) and np.all(out[:, 13:] == -1.0)
    out, spacing = fit_to_cube(np.zeros((32, 16, 8), np.float32) + 0.25, (1.0, 1.0, 1.0), 16, "resize")
    assert out.shape == (16, 16, 16) and spacing == (2.0, 1.0, 0.5)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_preprocess_volume_reorients_maps_and_trims(make_ct):
    hu = make_ct((16, 16, 16), seed=0, blank_bottom=2, blank_top=6)  # 8 content slices
    hu[0:3, 0:3, 9] = 600.0  # marker at storage index i≈0 (which is patient-right, see affine) and top slice
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # i runs right→left
    settings = PreprocessSettings(modality="ct", size=16, fit="crop-pad")
    out, info = preprocess_volume(Volume(hu, affine), settings)
    assert out.dtype == np.float16 and out.shape == (16, 16, 16)
    assert info["trimmed_slices"] == [2, 6] and info["spacing"] == [1.0, 1.0, 1.0]
    # 8 content slices centred in 16: slices 4..11; x flipped to RAS.
    expected = np.full((16, 16, 16), -1.0, dtype=np.float32)
    expected[..., 4:12] = normalize_ct(hu[::-1, :, 2:10])
    np.testing.assert_allclose(out.astype(np.float32), expected, atol=1e-3)
    assert out[15, 0, 11] == 1.0  # marker now at high x (right) in the top content slice


def test_settings_validation():
    for bad in [dict(size=48), dict(size=8), dict(hu_min=600.0, hu_max=-1024.0), dict(modality="pet"),
                dict(fit="stretch"), dict(spacing=0.0)]:
        with pytest.raises(UsageError):
            PreprocessSettings(**{"modality": "ct", "size": 32, **bad}).check()


def test_discovery_ids_and_ignored_files(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    (tmp_path / "b.nrrd").write_bytes(b"x")
    np.save(tmp_path / "c.npy", np.zeros((4, 4, 4)))
    (tmp_path / "dicom_ct").mkdir()
    (tmp_path / "dicom_ct" / "1.dcm").write_bytes(b"x")
    (tmp_path / "notes").mkdir()
    for name in ["manifest.csv", "preview.png", "meta.json", ".hidden.nii.gz"]:
        (tmp_path / name).write_bytes(b"x")
    assert [item.id for item in discover_inputs(tmp_path)] == ["a", "b", "c", "dicom_ct"]
    (tmp_path / "a.nii").write_bytes(b"x")
    with pytest.raises(UsageError, match="a.nii and a.nii.gz"):
        discover_inputs(tmp_path)


# --------------------------------------------------------------------------- command


def _good_folder(folder, make_ct, n=2):
    folder.mkdir(exist_ok=True)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(n):
        write_nifti(folder / f"good{i}.nii.gz", make_ct((20, 20, 12), seed=i), affine)
    return affine


def test_mixed_folder_writes_good_ones_and_names_each_failure(tmp_path, make_ct, medgen_main, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _good_folder(src, make_ct)
    write_nifti(src / "trunc.nii.gz", make_ct((20, 20, 12), seed=9), np.eye(4))
    data = (src / "trunc.nii.gz").read_bytes()
    (src / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    write_nifti(src / "flat.nii.gz", np.zeros((20, 20, 1), np.float32), np.eye(4))
    write_nifti(src / "frames.nii.gz", np.zeros((8, 8, 8, 3), np.float32), np.eye(4))
    write_nifti(src / "nans.nii.gz", np.full((8, 8, 8), np.nan, np.float32), np.eye(4))
    (src / "zero.nii.gz").touch()
    (src / "text.nii").write_text("not an image\n" * 30)
    with open(src / "labels.csv", "w") as fh:
        fh.write("id,label,age\ngood0,1,63.5\ngood1,0,70\n")

    code = medgen_main(["preprocess", str(src), str(out), "--modality", "ct", "--size", "16",
                        "--workers", "2", "--labels", str(src / "labels.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert "2 written, 0 skipped (already done), 6 failed:" in err
    reasons = {
        "trunc.nii.gz": "cannot read", "flat.nii.gz": "2D image", "frames.nii.gz": "4D image with 3 frames",
        "nans.nii.gz": "no finite values", "zero.nii.gz": "empty file", "text.nii": "cannot read",
    }
    lines = err.splitlines()
    for name, reason in reasons.items():
        matching = [ln for ln in lines if ln.startswith(f"  {src / name}: ")]
        assert len(matching) == 1 and reason in matching[0], (name, matching)
    assert "Traceback" not in err

    rows = _manifest(out / "manifest.csv")
    assert [r["id"] for r in rows] == ["good0", "good1"]
    assert list(rows[0]) == ["id", "source", "orig_shape", "orig_spacing", "spacing", "file", "label", "age"]
    assert rows[0]["label"] == "1" and rows[1]["age"] == "70"
    assert rows[0]["orig_shape"] == "20x20x12" and rows[0]["orig_spacing"] == "1.5x1.5x2"
    for i, row in enumerate(rows):
        arr = np.load(out / row["file"], mmap_mode="r")
        assert arr.dtype == np.float16 and arr.shape == (16, 16, 16)
        direct, info = preprocess_volume(read_volume(src / f"good{i}.nii.gz"), PreprocessSettings("ct", 16))
        np.testing.assert_array_equal(arr, direct)
        assert row["spacing"] == "x".join(f"{v:g}" for v in np.round(info["spacing"], 4))
    # In-plane 30 mm → 16 voxels of 1.875 mm; trimmed z (7 slices of 2 mm = 14 mm) → round(7.47) = 7
    # voxels of exactly 2 mm. Body is 40 HU.
    arr = np.load(out / "volumes" / "good0.npy").astype(np.float32)
    assert rows[0]["spacing"] == "1.875x1.875x2"
    hu_centre = denormalize_ct(arr[4, 8, 8])
    assert abs(hu_centre - 40.0) < 60.0  # soft tissue, not air (-1024) or lung (-850)
    info = json.loads((out / "preprocess.json").read_text())
    assert info["modality"] == "ct" and info["size"] == 16 and info["hu_window"] == [-1024.0, 600.0]


def test_rerun_is_idempotent_and_resumes(tmp_path, make_ct, medgen_main, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _good_folder(src, make_ct, n=3)
    args = ["preprocess", str(src), str(out), "--modality", "ct", "--size", "16", "--workers", "1"]
    assert medgen_main(args) == 0
    files = sorted((out / "volumes").glob("*.npy"))
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    manifest = (out / "manifest.csv").read_text()
    capsys.readouterr()

    assert medgen_main(args) == 0
    assert "0 written, 3 skipped (already done), 0 failed" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    (out / "volumes" / "good1.npy").unlink()  # as if interrupted before this one was written
    (out / "manifest.csv").unlink()
    assert medgen_main(args) == 0
    assert "1 written, 2 skipped (already done), 0 failed" in capsys.readouterr().err
    assert (out / "manifest.csv").read_text() == manifest
    assert mtimes[out / "volumes" / "good0.npy"] == (out / "volumes" / "good0.npy").stat().st_mtime_ns

    # Other settings into the same folder: refused, unless --overwrite.
    assert medgen_main(args[:-2] + ["--hu-max", "400"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err
    assert medgen_main(args + ["--hu-max", "400", "--overwrite"]) == 0
    assert json.loads((out / "preprocess.json").read_text())["hu_window"] == [-1024.0, 400.0]


def test_phantom_style_manifest_is_joined_automatically(tmp_path, make_ct, medgen_main, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _good_folder(src, make_ct)
    (src / "manifest.csv").write_text("id,file,label,lung_volume_ml\ngood0,good0.nii.gz,2,3100.5\n"
                                      "good1,good1.nii.gz,0,2800\n")
    assert medgen_main(["preprocess", str(src), str(out), "--modality", "ct", "--size", "16", "--workers", "1"]) == 0
    assert "joining labels from" in capsys.readouterr().err
    rows = _manifest(out / "manifest.csv")
    assert list(rows[0])[-2:] == ["label", "lung_volume_ml"]
    assert rows[0]["file"] == "volumes/good0.npy"  # not the input manifest's file column
    assert [(r["label"], r["lung_volume_ml"]) for r in rows] == [("2", "3100.5"), ("0", "2800")]


def test_mri_folder(tmp_path, medgen_main, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(5)
    head = np.zeros((16, 16, 20), np.float32)
    head[3:13, 3:13, 2:15] = rng.uniform(100.0, 900.0, size=(10, 10, 13))
    write_nifti(src / "brain.nii.gz", head, np.eye(4))
    assert medgen_main(["preprocess", str(src), str(out), "--modality", "mri", "--size", "16",
                        "--fit", "crop-pad", "--percentiles", "0", "100"]) == 0
    arr = np.load(out / "volumes" / "brain.npy").astype(np.float32)
    # 13 content slices centred in 16 → z 1..13; percentiles 0/100 map min/max of the tissue to ±1.
    expected = np.full((16, 16, 16), -1.0, np.float32)
    tissue = head[..., 2:15]
    lo, hi = tissue[tissue > 0].min(), tissue.max()
    expected[..., 1:14] = np.where(tissue > 0, 2 * (tissue - lo) / (hi - lo) - 1, -1.0)
    np.testing.assert_allclose(arr, expected, atol=2e-3)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: [str(d / "missing"), str(d / "o"), "--modality", "ct", "--size", "16"], "does not exist"),
        (lambda d: [str(d / "empty"), str(d / "o"), "--modality", "ct", "--size", "16"], "no input volumes"),
        (lambda d: [str(d / "in"), str(d / "o"), "--modality", "ct", "--size", "24"], "power of two"),
        (lambda d: [str(d / "in"), str(d / "o"), "--modality", "ct", "--size", "16",
                    "--hu-min", "100", "--hu-max", "0"], "--hu-min must be below --hu-max"),
        (lambda d: [str(d / "in"), str(d / "o"), "--modality", "ct", "--size", "16",
                    "--labels", str(d / "nolabels.csv")], "does not exist"),
        (lambda d: [str(d / "in"), str(d / "o"), "--modality", "ct", "--size", "16",
                    "--labels", str(d / "bad.csv")], "no 'id' column"),
        (lambda d: [str(d / "broken"), str(d / "o"), "--modality", "ct", "--size", "16"], "no readable input"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, make_ct, medgen_main, capsys, make_args, message):
    _good_folder(tmp_path / "in", make_ct, n=1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.nii.gz").touch()
    (tmp_path / "bad.csv").write_text("name,label\ngood0,1\n")
    code = medgen_main(["preprocess", *make_args(tmp_path), "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [ln for ln in err.splitlines() if ln.startswith("medgen preprocess: error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "manifest.csv").exists()


# --------------------------------------------------------------------------- extra volumes


def test_resize_labels_takes_the_input_voxel_under_each_output_centre():
    from medgen.data.preprocess import resize_labels

    labels = np.arange(4, dtype=np.int16).reshape(4, 1, 1) * np.ones((1, 2, 3), np.int16)
    np.testing.assert_array_equal(resize_labels(labels, (8, 2, 3))[:, 0, 0], [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(resize_labels(labels, (2, 2, 3))[:, 0, 0], [1, 3])  # centres 1 and 3
    np.testing.assert_array_equal(resize_labels(labels, (3, 2, 3))[:, 0, 0], [0, 2, 3])  # 0.67, 2, 3.33
    out = resize_labels(labels, (6, 4, 1))
    assert out.dtype == np.int16 and out.shape == (6, 4, 1)


def _subject(make_ct):
    """A CT with blank slices (2 bottom, 6 top), stored right→left on x, 1.5 x 1.5 x 2 mm, with a label map
    (0 air, 1 body, 2 lung, 7 a marker block) and a second intensity volume (+100 HU) on its grid."""
    hu = make_ct((20, 18, 16), seed=3, blank_bottom=2, blank_top=6)
    labels = np.where(hu > -900, 1, 0).astype(np.int16)
    labels[(hu < -700) & (hu > -900)] = 2
    labels[2:6, 3:7, 6:9] = 7
    affine = np.diag([-1.5, 1.5, 2.0, 1.0])
    return hu, labels, affine


@pytest.mark.parametrize("fit, spacing", [("resize-keep-aspect", None), ("crop-pad", None), ("resize", 2.5)])
def test_extra_volumes_get_exactly_the_image_geometry(make_ct, fit, spacing):
    from medgen.data.preprocess import preprocess_subject, resample_isotropic

    hu, labels, affine = _subject(make_ct)
    settings = PreprocessSettings(modality="ct", size=16, fit=fit, spacing=spacing)
    out, info = preprocess_subject(
        Volume(hu, affine), {"tissue": (Volume(labels.astype(np.float32), affine), "label"),
                             "target": (Volume(hu + 100.0, affine), "intensity")}, settings)
    image, info_alone = preprocess_volume(Volume(hu, affine), settings)
    np.testing.assert_array_equal(out["image"], image)  # the image is unchanged by its companions
    assert info == info_alone
    tissue, target = out["tissue"], out["target"]
    assert tissue.dtype == np.int16 and target.dtype == np.float16 and tissue.shape == target.shape == (16,) * 3
    assert set(np.unique(tissue)) <= {0, 1, 2, 7}
    # built by hand: flip x to RAS, resample, cut the image's blank slices, fit; labels by nearest neighbour
    ras_labels, ras_target, sp = labels[::-1], normalize_ct(hu[::-1] + 100.0), (1.5, 1.5, 2.0)
    if spacing is not None:
        ras_labels = resample_isotropic(ras_labels, sp, spacing, labels=True)[0]
        ras_target = normalize_ct(resample_isotropic(np.clip(hu[::-1] + 100.0, -1024, 600), sp, spacing)[0])
        sp = resample_isotropic(labels, sp, spacing)[1]
    bottom, top = info["trimmed_slices"]
    assert bottom >= 1 and top >= 4  # the image's blank slices; the +100 HU volume has none
    n = ras_labels.shape[2]
    expected, _ = fit_to_cube(ras_labels[..., bottom : n - top], sp, 16, fit, labels=True)
    np.testing.assert_array_equal(tissue, expected)
    expected, _ = fit_to_cube(ras_target[..., bottom : n - top], sp, 16, fit)
    np.testing.assert_allclose(target.astype(np.float32), np.clip(expected, -1, 1), atol=1e-3)
    # the padding of a label map is class 0, of an intensity volume the background -1
    assert (tissue[image == -1.0] == 0).mean() > 0.9
    if fit != "resize":
        assert (target[tissue == 0] <= -0.8).mean() > 0.9


def test_extra_volumes_must_share_the_image_grid_and_labels_be_integers(make_ct):
    from medgen.data.preprocess import preprocess_subject

    hu, labels, affine = _subject(make_ct)
    settings = PreprocessSettings(modality="ct", size=16)
    shifted = affine.copy()
    shifted[0, 3] += 1.5
    for other in (Volume(labels.astype(np.float32), shifted), Volume(labels[:, :, :8].astype(np.float32), affine)):
        with pytest.raises(InputError, match="tissue volume.*voxel-aligned with the image"):
            preprocess_subject(Volume(hu, affine), {"tissue": (other, "label")}, settings)
    with pytest.raises(InputError, match="tissue volume: a label map needs integer classes"):
        preprocess_subject(Volume(hu, affine), {"tissue": (Volume(labels + 0.5, affine), "label")}, settings)


def test_volume_option_carries_columns_of_the_input_manifest(tmp_path, medgen_main, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "segs").mkdir(parents=True)
    (src / "t2").mkdir()
    rng = np.random.default_rng(2)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    lines = ["id,seg_path,t2,age"]
    for i in range(3):
        head = np.zeros((16, 16, 12), np.float32)
        head[3:13, 3:13, 1:10] = rng.uniform(100.0, 900.0, size=(10, 10, 9))
        seg = np.where(head > 500, 2, np.where(head > 0, 1, 0)).astype(np.int16)
        write_nifti(src / f"case{i}.nii.gz", head, affine)
        write_nifti(src / "segs" / f"case{i}.nii.gz", seg, affine)
        write_nifti(src / "t2" / f"case{i}.nii.gz", 3.0 * head, affine)  # same anatomy, 3x the scale
        lines.append(f"case{i},{'segs/case%d.nii.gz' % i if i < 2 else ''},t2/case{i}.nii.gz,{60 + i}")
    (src / "manifest.csv").write_text("\n".join(lines) + "\n")
    args = ["preprocess", str(src), str(out), "--modality", "mri", "--size", "16", "--workers", "1", "--no-progress",
            "--volume", "seg=seg_path:label", "--volume", "t2:intensity"]
    assert medgen_main(args) == 0
    err = capsys.readouterr().err
    assert "seg: 1 of 3 subjects have no seg volume" in err and "(e.g. case2)" in err
    rows = _manifest(out / "manifest.csv")
    assert list(rows[0])[6:] == ["age", "seg", "t2"]  # volume paths are not joined as labels
    assert [r["seg"] for r in rows] == ["segs/case0.npy", "segs/case1.npy", ""]
    assert [r["t2"] for r in rows] == [f"t2s/case{i}.npy" for i in range(3)]
    info = json.loads((out / "preprocess.json").read_text())
    assert info["volumes"]["seg"] == {"kind": "label", "dtype": "int16", "input_column": "seg_path"}
    assert info["volumes"]["t2"] == {"kind": "intensity", "dtype": "float16", "input_column": "t2"}
    for i in range(2):
        image = np.load(out / "volumes" / f"case{i}.npy").astype(np.float32)
        seg = np.load(out / "segs" / f"case{i}.npy")
        t2 = np.load(out / "t2s" / f"case{i}.npy").astype(np.float32)
        assert seg.dtype == np.int16 and set(np.unique(seg)) == {0, 1, 2}
        # normalised by its own percentiles: 3x the intensities give the same normalised image
        np.testing.assert_allclose(t2, image, atol=2e-3)
        assert (image[seg == 0] == -1.0).all() and np.median(image[seg == 2]) > np.median(image[seg == 1]) + 0.6

    # a rerun skips everything; a changed label file redoes its subject only
    assert medgen_main(args) == 0
    assert "0 written, 3 skipped" in capsys.readouterr().err
    seg = np.asarray(read_volume(src / "segs" / "case1.nii.gz").array, dtype=np.int16)
    write_nifti(src / "segs" / "case1.nii.gz", np.where(seg == 2, 3, seg).astype(np.int16), affine)
    assert medgen_main(args) == 0
    assert "1 written, 2 skipped" in capsys.readouterr().err
    assert 3 in np.load(out / "segs" / "case1.npy")

    # a missing file fails that subject only, naming the volume
    (src / "t2" / "case0.nii.gz").unlink()
    assert medgen_main(args[:1] + [str(src), str(tmp_path / "o2")] + args[3:]) == 1
    err = capsys.readouterr().err
    assert "2 written, 0 skipped (already done), 1 failed" in err
    assert any(ln.startswith(f"  {src / 'case0.nii.gz'}: t2 volume: ") and "no such file" in ln
               for ln in err.splitlines())


@pytest.mark.parametrize(
    "option, message",
    [
        ("seg:mask", "volume 'seg' has kind 'mask'; choose intensity or label"),
        ("seg", "expected NAME:KIND or NAME=COLUMN:KIND"),
        ("image:label", "volume name 'image'"),
        ("Seg:label", "volume name 'Seg'"),
        ("seg=nocolumn:label", "no column 'nocolumn' for volume 'seg'"),
    ],
)
def test_volume_option_errors_are_one_line(tmp_path, make_ct, medgen_main, capsys, option, message):
    _good_folder(tmp_path / "in", make_ct, n=1)
    (tmp_path / "in" / "manifest.csv").write_text("id,seg\ngood0,good0.nii.gz\n")
    code = medgen_main(["preprocess", str(tmp_path / "in"), str(tmp_path / "o"), "--modality", "ct", "--size", "16",
                        "--no-progress", "--workers", "1", "--volume", option])
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [ln for ln in err.splitlines() if ln.startswith("medgen preprocess: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert not (tmp_path / "o" / "manifest.csv").exists()
